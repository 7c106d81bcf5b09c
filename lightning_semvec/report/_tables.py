"""A layer's section of the report: its figures and the table of its neurons.

The table lists, per alive neuron, what the validation data said about it (preferred class,
class selectivity, mean activation; when the file carries them), rounded, the norm of its
vector and its nearest alive neurons. Dead neurons (constant on the validation data: no
preferred class, selectivity or neighbours) are named in one line under the table instead of a
row each. A column that reads the same on every listed row (the vector norm of unit vectors)
is left out and named once under the table. Selectivity values outside ``[0, 1]`` (files
exported before the index was defined for signed activations) are left empty with a note.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from torch import Tensor

from lightning_semvec.report._layer_order import LayerScore
from lightning_semvec.report._neighbours import nearest_neighbours

__all__ = ["SELECTIVITY_NOTE", "layer_section", "layer_summary", "statistic_cells", "statistics_source"]

#: What the selectivity column means and when a cell is empty (in "About this file").
SELECTIVITY_NOTE = (
    "Selectivity is the class selectivity index of Morcos et al. (2018), (mu_max - mu_rest) / "
    "(mu_max + mu_rest) of a neuron's class means: 0 for a neuron that responds alike to every "
    "class, 1 for one that responds to a single class. It is defined for non-negative "
    "activations; a neuron whose activations go below 0 (logits, layers before a ReLU) gets the "
    "index of its activations shifted up by their minimum. Dead neurons have no preferred class "
    "or selectivity."
)

# Statistics shown in the table, when the knowledge file carries them.
_STAT_COLUMNS = ("preferred_class", "selectivity", "mean_activation", "dead")
# Columns whose cells are numbers, aligned right.
_NUMERIC = {"selectivity", "mean_activation", "vector_norm"}


def _format(value: float, decimals: int) -> str:
    """A number rounded for a table cell; empty for NaN (no value)."""
    return "" if value != value else f"{value:.{decimals}f}"


def statistic_cells(
    stats: dict[str, Tensor], class_names: Sequence[str], rows: int
) -> tuple[dict[str, list[str]], int]:
    """The table's statistic columns as text, one entry per listed neuron, and how many
    selectivity cells were left empty because the file's value lies outside ``[0, 1]``.

    Dead neurons get no preferred class and no selectivity: their class means are all equal,
    so the argmax and the index say nothing about them.

    Example:
        >>> import torch
        >>> cells, _ = statistic_cells({"preferred_class": torch.tensor([1, 0]),
        ...                             "dead": torch.tensor([False, True])}, ["a", "b"], 2)
        >>> cells
        {'preferred_class': ['b', ''], 'dead': ['', 'dead']}
    """
    cells: dict[str, list[str]] = {}
    dead = stats["dead"][:rows].tolist() if "dead" in stats else [False] * rows
    out_of_range = 0
    for key in _STAT_COLUMNS:
        value = stats.get(key)
        if value is None:
            continue
        values = value[:rows].tolist()
        if key == "preferred_class":
            cells[key] = [
                "" if gone else class_names[c] if 0 <= c < len(class_names) else str(c)
                for c, gone in zip(values, dead)
            ]
        elif key == "dead":
            cells[key] = ["dead" if v else "" for v in values]
        elif key == "selectivity":
            valid = [0.0 <= v <= 1.0 + 1e-6 for v in values]
            out_of_range += sum(1 for v, ok, gone in zip(values, valid, dead)
                                if not ok and not gone and v == v)
            cells[key] = ["" if gone or not ok else _format(min(v, 1.0), 2)
                          for v, ok, gone in zip(values, valid, dead)]
        else:
            cells[key] = [_format(v, 3) for v in values]
    return cells, out_of_range


def statistics_source(has_statistics: bool, embedded: bool) -> str:
    """Where a layer's statistics come from, in one sentence.

    Example:
        >>> statistics_source(True, False)
        'Statistics: the last analysed validation epoch.'
    """
    if not has_statistics:
        return ("No validation statistics in this knowledge file (export it after an analysed "
                "validation epoch to add them).")
    return ("Statistics: measured on the data it was embedded on." if embedded else
            "Statistics: the last analysed validation epoch.")


def layer_summary(score: LayerScore, dim: int, embedded: bool) -> str:
    """One sentence of a layer's numbers: neurons, dimensions, dead ones, fidelity and mean
    selectivity (those the file holds).

    Example:
        >>> layer_summary(LayerScore("fc", "00_fc", 10, 1, 0.93, 0.29, 0.27), 8, False)
        '10 neurons, 8-dimensional vectors; 1 dead; held-out fidelity 0.93; mean class selectivity 0.29.'
    """
    parts = [f"{score.neurons} neurons, {dim}-dimensional vectors"]
    if score.dead:
        parts.append(f"{score.dead} dead")
    if score.fidelity == score.fidelity:
        parts.append(f"{'in-sample' if embedded else 'held-out'} fidelity {score.fidelity:.2f}")
    if score.selectivity == score.selectivity:
        parts.append(f"mean class selectivity {score.selectivity:.2f}")
    return "; ".join(parts) + "."


def layer_section(
    score: LayerScore,
    vectors: Tensor,
    stats: dict[str, Tensor],
    class_names: Sequence[str],
    short_names: Sequence[str],
    *,
    neighbours: int,
    max_rows: int,
    shown: int,
    embedded: bool = False,
    explain: str = "",
) -> str:
    """The HTML section of one layer: summary, heatmap and PCA figures
    (``<slug>_similarity.png``, ``<slug>_pca.png``) and the neuron table.

    Args:
        score: the layer's :class:`LayerScore` (name, slug, numbers).
        vectors: its ``(N, d)`` vectors.
        stats: its statistics.
        class_names: the class names (``[]`` without classes).
        short_names: ``N`` short neuron names for the neighbour cells.
        neighbours: nearest neighbours per neuron.
        max_rows: neurons listed (the first ones).
        shown: neurons in the heatmap.
        embedded: the statistics come from the embedding data, not a validation epoch.
        explain: how far its vectors explain (HTML paragraphs of
            :func:`~lightning_semvec.report._agreement.agreement_sentence`), under the summary.
    """
    name, slug = score.name, score.slug
    n, d = vectors.shape
    rows = min(n, max_rows)
    alive = ~stats["dead"] if "dead" in stats else None
    idx, sim = nearest_neighbours(vectors, neighbours, rows=rows, alive=alive)
    stat_cells, out_of_range = statistic_cells(stats, class_names, rows)
    norms = vectors[:rows].norm(dim=1).tolist()
    columns: dict[str, tuple[str, list[str]]] = {
        "neuron": ("neuron", [str(i) for i in range(rows)]),
        **{key: (key.replace("_", " "), cells) for key, cells in stat_cells.items()},
        "vector_norm": ("vector norm", [_format(v, 2) for v in norms]),
        "neighbours": ("nearest neighbours (semantic similarity)", [
            ", ".join(f"{short_names[j]} ({s:+.2f})" for j, s in zip(idx[i].tolist(),
                                                                  sim[i].tolist()) if j >= 0)
            for i in range(rows)]),
    }
    columns.pop("dead", None)  # dead neurons get a line of their own, not rows
    dead = stats["dead"][:rows].tolist() if "dead" in stats else [False] * rows
    listed = [i for i in range(rows) if not dead[i]]
    constant = []
    for key in list(columns):
        header, cells = columns[key]
        values = {cells[i] for i in listed}
        if key != "neuron" and len(listed) > 1 and len(values) == 1:
            value = values.pop()
            constant.append(f"{header} {value}" if value else f"{header}: none")
            del columns[key]
    body = []
    for i in listed:
        tds = "".join(
            f'<td class="num">{html.escape(cells[i])}</td>' if key in _NUMERIC
            else f"<td>{html.escape(cells[i])}</td>"
            for key, (_, cells) in columns.items()
        )
        body.append(f"<tr>{tds}</tr>")
    source = statistics_source(bool(stat_cells), embedded)
    notes = []
    gone = [i for i in range(rows) if dead[i]]
    if gone:
        notes.append(f"Dead (constant on {'the data it was embedded on' if embedded else 'the validation data'}"
                     f"; no preferred class, selectivity or neighbours), not listed: "
                     f"{', '.join(str(i) for i in gone)}.")
    if constant:
        notes.append("The same for every listed neuron, so not a column: "
                     + "; ".join(constant) + ".")
    if out_of_range:
        notes.append(
            f"{out_of_range} selectivity values of this file lie outside [0, 1] and are left "
            "empty: the file was exported before the index was defined for signed activations; "
            "export it again to fill them."
        )
    if rows < n:
        notes.append(f"{n - rows} more neurons are not listed (max_table_rows={max_rows}).")
    note = "".join(f'<p class="note">{html.escape(t)}</p>' for t in notes)
    heatmap_note = f" ({shown} of {n} neurons, evenly spaced)" if shown < n else ""
    header = "".join(f"<th>{html.escape(h)}</th>" for h, _ in columns.values())
    return f"""
<section id="{slug}" class="layer">
<h2>{html.escape(name)} <a class="top" href="#top">top</a></h2>
<p>{html.escape(layer_summary(score, d, embedded))} {html.escape(source)}</p>
{explain}
<div class="figures">
<figure><img src="{slug}_similarity.png" alt="semantic similarity of {html.escape(name)}">
<figcaption>Semantic similarity{heatmap_note}, neurons ordered by hierarchical clustering.
</figcaption></figure>
<figure><img src="{slug}_pca.png" alt="PCA map of {html.escape(name)}">
<figcaption>The vectors on their first two principal components.</figcaption></figure>
</div>
<table>
<thead><tr>{header}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{note}
</section>"""
