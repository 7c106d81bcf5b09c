"""A static HTML report of a knowledge file: figures per layer and a table of its neurons.

:func:`write_report` reads a knowledge file (see :mod:`lightning_semvec.knowledge`) and writes
a folder that any browser opens without a server:

.. code-block:: text

    <out_dir>/index.html                 the report
    <out_dir>/<nn>_<layer>_similarity.png   semantic similarity heatmap (clustered order)
    <out_dir>/<nn>_<layer>_pca.png          PCA map of the vectors

The page starts with a table of contents (each layer, its neurons and dead neurons, linked to
its section). Each layer's table lists, per neuron, the norm of its vector and its nearest
neighbours by semantic similarity and, when the knowledge file carries them, what the
validation data said about each neuron (preferred class, class selectivity, mean activation,
dead), rounded. Dead neurons have no preferred class or selectivity (empty cells), and
selectivity values outside ``[0, 1]`` (files exported before the index was defined for signed
activations) are left empty with a note. A knowledge file of
:func:`~lightning_semvec.embed_models` (models in one space) also gets a "Matching" section per
model after the first (:mod:`lightning_semvec.report.matching`).
"""

from __future__ import annotations

import html
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.files import check_output_folder, staged_folder
from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.analysis.figures import pca_map, similarity_heatmaps
from lightning_semvec.errors import SemvecFileNotFoundError
from lightning_semvec.functional.similarity import (
    normalize_vectors,
    semantic_similarity,
)
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.report.matching import matching_sections

__all__ = [
    "nearest_neighbours",
    "write_report",
]

# Statistics shown in the table, when the knowledge file carries them.
_STAT_COLUMNS = ("preferred_class", "selectivity", "mean_activation", "dead")


def nearest_neighbours(
    vectors: Tensor, k: int = 3, chunk: int = 1024, rows: int | None = None
) -> tuple[Tensor, Tensor]:
    """Each neuron's ``k`` most similar other neurons by semantic (cosine) similarity.

    Computed in row chunks, so memory stays ``O(chunk * N)`` even for wide layers.

    Args:
        vectors: ``(N, d)`` semantic vectors.
        k: neighbours per neuron (at most ``N - 1``).
        chunk: rows of the similarity matrix built at once.
        rows: only the first ``rows`` neurons' neighbours (among all ``N``); default all.

    Returns:
        ``(indices, similarities)``: ``(R, k)`` int64 and ``(R, k)`` float32, most similar
        first, ``R = rows or N``.

    Example:
        >>> idx, sim = nearest_neighbours(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=1)
        >>> idx.squeeze(1).tolist()
        [1, 0, 1]
    """
    n = vectors.shape[0]
    k = max(0, min(k, n - 1))
    e = normalize_vectors(vectors)
    indices, values = [], []
    for start in range(0, n if rows is None else min(rows, n), chunk):
        stop = start + chunk if rows is None else min(start + chunk, rows)
        block = e[start:stop] @ e.T
        local = torch.arange(block.shape[0])
        block[local, local + start] = float("-inf")  # a neuron is not its own neighbour
        top = block.topk(k, dim=1)
        indices.append(top.indices)
        values.append(top.values)
    if not indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(indices), torch.cat(values)


def write_report(
    knowledge_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    log_dir: str | os.PathLike[str] | None = None,
    *,
    max_heatmap_neurons: int = 128,
    neighbours: int = 3,
    max_table_rows: int = 2000,
    max_matching_rows: int = 50,
    overwrite: bool = False,
) -> Path:
    """Write the report folder of a knowledge file; returns the path of its ``index.html``.

    The folder is written whole or not at all: the page and figures go to a hidden folder
    beside ``out_dir`` and replace it only once all are written, so a failed write (a full disk)
    leaves a previous report as it was.

    ``semvec report`` takes its arguments and options from this signature.

    Args:
        knowledge_path: a ``.semvec.safetensors`` knowledge file. When it carries per-neuron
            statistics (files exported after an analysed validation epoch), the table shows
            each neuron's preferred class, class selectivity and mean activation and marks the
            dead ones, and the PCA map is coloured by preferred class.
        out_dir: the folder to write (created, with its parents, if needed).
        log_dir: deprecated and ignored: the statistics now come from the knowledge file.
        max_heatmap_neurons: the heatmap shows at most this many neurons (evenly spaced).
        neighbours: nearest neighbours listed per neuron.
        max_table_rows: neurons listed per layer (the first ones); the report says how many
            were left out.
        max_matching_rows: matched neurons listed in each "Matching" section of a joint
            knowledge file (``lightning_semvec.embed_models``), best correlation first.
        overwrite: replace ``out_dir`` as a whole if it holds files (another run's report);
            by default that is an error, raised before anything is written.

    Returns:
        ``<out_dir>/index.html``.

    Raises:
        KnowledgeFileError: if ``knowledge_path`` is not a valid knowledge file.
        SemvecFileNotFoundError: if ``knowledge_path`` does not exist.
        SemvecFileExistsError: if ``out_dir`` holds files and ``overwrite`` is false.
        SemvecValueError: if ``max_heatmap_neurons`` is not an integer >= 1, or
            ``neighbours``, ``max_table_rows`` or ``max_matching_rows`` not one >= 0.

    Example:
        >>> import tempfile, os, torch
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"fc": torch.eye(4)[:, :3] + 0.1}, class_names=["a", "b", "c", "d"])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = knowledge.save(os.path.join(tmp, "k.semvec.safetensors"))
        ...     index = write_report(path, os.path.join(tmp, "report"))
        ...     sorted(p.name for p in index.parent.iterdir())
        ['00_fc_pca.png', '00_fc_similarity.png', 'index.html']
    """
    check_int("max_heatmap_neurons", max_heatmap_neurons, 1)
    check_int("neighbours", neighbours, 0)
    check_int("max_table_rows", max_table_rows, 0)
    check_int("max_matching_rows", max_matching_rows, 0)
    if log_dir is not None:
        warnings.warn(
            "write_report(log_dir=...) is deprecated and ignored: the per-neuron statistics "
            "come from the knowledge file (export it again to include them).",
            FutureWarning,
            stacklevel=2,
        )
    knowledge_path = Path(knowledge_path)
    if not knowledge_path.is_file():
        raise SemvecFileNotFoundError(f"Knowledge file {str(knowledge_path)!r} does not exist.")
    knowledge = StaticKnowledge.load(knowledge_path)
    final = check_output_folder(out_dir, overwrite)
    with staged_folder(final) as out:
        _write_pages(knowledge, knowledge_path, out, max_heatmap_neurons, neighbours, max_table_rows,
                     max_matching_rows)
    return final / "index.html"


def _write_pages(knowledge: StaticKnowledge, knowledge_path: Path, out: Path, max_heatmap_neurons: int,
                 neighbours: int, max_table_rows: int, max_matching_rows: int) -> None:
    class_names = knowledge.class_names
    sections, contents = [], []
    for position, name in enumerate(knowledge.layer_names):
        if not knowledge[name].learned:
            continue  # its vectors are their random start (the page's facts name it)
        vectors = knowledge[name].vectors
        stats = knowledge.statistics(name)
        n = vectors.shape[0]
        # The position keeps names apart; 80 characters keep a file name within every file
        # system's limit, however long the layer's name.
        slug = f"{position:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}"
        ids = evenly_spaced(n, max_heatmap_neurons)
        figure = similarity_heatmaps(semantic_similarity(vectors[ids]), neuron_ids=ids,
                                     title=f"{name}: semantic similarity")
        figure.savefig(out / f"{slug}_similarity.png", dpi=100)
        figure = pca_map(vectors, stats.get("preferred_class"), class_names, stats.get("dead"),
                         title=f"{name}: PCA of the vectors")
        figure.savefig(out / f"{slug}_pca.png", dpi=100)
        sections.append(
            _layer_section(name, slug, vectors, stats, class_names, neighbours, max_table_rows,
                           shown=ids.numel(), embedded="embedded" in knowledge.extra)
        )
        dead = int(stats["dead"].sum()) if "dead" in stats else None
        contents.append((name, slug, n, dead))
    for title, anchor, n, section in matching_sections(knowledge, max_matching_rows):
        sections.append(section)
        contents.append((title, anchor, n, None))
    with_selectivity = any("selectivity" in knowledge.statistics(n) for n in knowledge.layer_names)
    page = _page(knowledge, knowledge_path, _contents(contents, with_selectivity), sections)
    (out / "index.html").write_text(page, "utf-8")


#: The note under every table that lists selectivity: what it is and when a cell is empty.
SELECTIVITY_NOTE = (
    "Selectivity is the class selectivity index of Morcos et al. (2018), (mu_max - mu_rest) / "
    "(mu_max + mu_rest) of a neuron's class means: 0 for a neuron that responds alike to every "
    "class, 1 for one that responds to a single class. It is defined for non-negative "
    "activations; a neuron whose activations go below 0 (logits, layers before a ReLU) gets the "
    "index of its activations shifted up by their minimum. Dead neurons have no preferred class "
    "or selectivity."
)


def _format(value: float, decimals: int) -> str:
    """A number rounded for a table cell; empty for NaN (no value)."""
    return "" if value != value else f"{value:.{decimals}f}"


def _statistic_cells(
    stats: dict[str, Tensor], class_names: Sequence[str] | None, rows: int
) -> tuple[dict[str, list[str]], int]:
    """The table's statistic columns as text, one entry per listed neuron, and how many
    selectivity cells were left empty because the file's value lies outside ``[0, 1]``.

    Dead neurons get no preferred class and no selectivity: their class means are all equal,
    so the argmax and the index say nothing about them.
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
            names = list(class_names or [])
            cells[key] = [
                "" if gone else names[c] if 0 <= c < len(names) else str(c)
                for c, gone in zip(values, dead)
            ]
        elif key == "dead":
            cells[key] = ["dead" if v else "" for v in values]
        elif key == "selectivity":
            # Files exported before the index was defined for signed activations can hold
            # values outside [0, 1] (logits, pre-ReLU layers): those mean nothing.
            valid = [0.0 <= v <= 1.0 + 1e-6 for v in values]
            out_of_range += sum(1 for v, ok, gone in zip(values, valid, dead)
                                if not ok and not gone and v == v)
            cells[key] = ["" if gone or not ok else _format(min(v, 1.0), 2)
                          for v, ok, gone in zip(values, valid, dead)]
        else:
            cells[key] = [_format(v, 3) for v in values]
    return cells, out_of_range


#: Columns whose cells are numbers, aligned right.
_NUMERIC = {"selectivity", "mean_activation", "vector_norm"}


def _layer_section(
    name: str,
    slug: str,
    vectors: Tensor,
    stats: dict[str, Tensor],
    class_names: Sequence[str] | None,
    neighbours: int,
    max_rows: int,
    shown: int,
    embedded: bool = False,
) -> str:
    n, d = vectors.shape
    norms = vectors.norm(dim=1)
    rows = min(n, max_rows)
    idx, sim = nearest_neighbours(vectors, neighbours, rows=rows)
    stat_cells, out_of_range = _statistic_cells(stats, class_names, rows)
    keys = ["neuron", *stat_cells, "vector_norm", "neighbours"]
    header = ["neuron", *(c.replace("_", " ") for c in stat_cells), "vector norm",
              "nearest neighbours (semantic similarity)"]
    dead = stat_cells.get("dead", [""] * rows)
    body = []
    for i in range(rows):
        cells = [str(i), *(column[i] for column in stat_cells.values())]
        cells.append(_format(norms[i].item(), 2))
        cells.append(", ".join(f"{j} ({s:+.2f})" for j, s in zip(idx[i].tolist(), sim[i].tolist())))
        tds = "".join(
            f'<td class="num">{html.escape(c)}</td>' if key in _NUMERIC
            else f"<td>{html.escape(c)}</td>"
            for key, c in zip(keys, cells)
        )
        body.append(f'<tr class="dead">{tds}</tr>' if dead[i] else f"<tr>{tds}</tr>")
    if stat_cells:
        # embed_neurons / embed_models measure on the data they stream, not a validation epoch.
        data = "the data it was embedded on" if embedded else "the validation data"
        source = ("Statistics: from the knowledge file, measured on the data it was embedded on."
                  if embedded else "Validation statistics: from the knowledge file (the last "
                  "analysed validation epoch).")
        dead_count = int(stats["dead"].sum()) if "dead" in stats else 0
        if "dead" in stats:
            source += f" {dead_count} of {n} neurons dead (constant on {data})."
    else:
        source = ("No validation statistics in this knowledge file (export it after an analysed "
                  "validation epoch to add them).")
    notes = []
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
    return f"""
<section id="{slug}">
<h2>{html.escape(name)} <a class="top" href="#contents">contents</a></h2>
<p>{n} neurons, {d}-dimensional vectors. {html.escape(source)}</p>
<div class="figures">
<figure><img src="{slug}_similarity.png" alt="semantic similarity of {html.escape(name)}">
<figcaption>Semantic similarity{heatmap_note}, neurons ordered by hierarchical clustering.
</figcaption></figure>
<figure><img src="{slug}_pca.png" alt="PCA map of {html.escape(name)}">
<figcaption>The vectors on their first two principal components.</figcaption></figure>
</div>
<table>
<thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in header)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{note}
</section>"""


def _contents(rows: list[tuple[str, str, int, int | None]], selectivity_note: bool) -> str:
    """The table of contents: one linked row per layer with its neurons and dead ones, and
    what the selectivity column means when a table shows it."""
    with_dead = any(dead is not None for *_, dead in rows)
    head = "<th>layer</th><th>neurons</th>" + ("<th>dead</th>" if with_dead else "")
    body = "".join(
        f'<tr><td><a href="#{slug}">{html.escape(name)}</a></td><td class="num">{n}</td>'
        + (f'<td class="num">{"" if dead is None else dead}</td>' if with_dead else "")
        + "</tr>"
        for name, slug, n, dead in rows
    )
    return f"""<nav id="contents">
<h2>Contents</h2>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{f'<p class="note">{html.escape(SELECTIVITY_NOTE)}</p>' if selectivity_note else ""}
</nav>"""


def _page(
    knowledge: StaticKnowledge, knowledge_path: Path, contents: str, sections: list[str]
) -> str:
    extra = knowledge.extra
    embedded = extra.get("embedded")
    facts = [
        ("knowledge file", str(knowledge_path)),
        ("models" if "; " in (knowledge.source_model or "") else "teacher model" if not embedded
         else "model", knowledge.source_model or "unknown"),
        ("training steps", str(knowledge.training_steps) if knowledge.training_steps or not embedded
         else "not recorded"),
        *([("vectors", f"{embedded}, in-sample fidelity {float(extra['fidelity/joint']):.4f}"
            if "fidelity/joint" in extra else str(embedded))] if embedded else []),
        ("classes", ", ".join(knowledge.class_names) if knowledge.class_names else "unknown"),
        ("lightning_semvec", knowledge.package_version),
    ]
    unlearned = [name for name, layer in knowledge.layers.items() if not layer.learned]
    if unlearned:
        facts.append(("left out", "layers that learned nothing (a constant output or one neuron: "
                      "their vectors are their random start): " + ", ".join(unlearned)))
    listing = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Semantic vectors: {html.escape(knowledge_path.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.dead td {{ color: #888; }}
thead th {{ background: #f0f0f0; position: sticky; top: 0; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0; }}
img {{ max-width: 100%; }}
section {{ margin-top: 2.5em; }}
a.top {{ font-size: 0.5em; font-weight: normal; margin-left: 1em; }}
p.note {{ font-size: 0.85em; color: #555; max-width: 60em; }}
</style>
</head>
<body>
<h1>Semantic vectors</h1>
<table>{listing}</table>
{contents}
{"".join(sections)}
</body>
</html>
"""
