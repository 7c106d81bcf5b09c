"""A static HTML report of a knowledge file: figures per layer and a table of its neurons.

:func:`write_report` reads a knowledge file (see :mod:`lightning_semvec.knowledge`) and writes
a folder that any browser opens without a server:

.. code-block:: text

    <out_dir>/index.html                 the report
    <out_dir>/<nn>_<layer>_similarity.png   semantic similarity heatmap (clustered order)
    <out_dir>/<nn>_<layer>_pca.png          PCA map of the vectors

Each layer's table lists, per neuron, the norm of its vector and its nearest neighbours by
semantic similarity. Given the run's TensorBoard log folder, it also shows what the
validation data said about each neuron (preferred class, class selectivity, mean activation,
dead), read from the newest Embedding Projector metadata that
:class:`~lightning_semvec.SemanticVectorCallback` wrote there.
"""

from __future__ import annotations

import html
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lightning_semvec.checks import check_int
from lightning_semvec.errors import SemvecFileNotFoundError
from lightning_semvec.figures import evenly_spaced, pca_map, similarity_heatmaps
from lightning_semvec.functional.similarity import normalize_vectors, semantic_similarity
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.projector import (
    CONFIG_FILENAME,
    read_embedding_metadata,
    read_projector_config,
)

__all__ = [
    "ProjectorMetadata",
    "find_projector_metadata",
    "main",
    "nearest_neighbours",
    "write_report",
]

# Metadata columns shown in the table, when the projector metadata has them.
_STAT_COLUMNS = ("preferred_class", "selectivity", "mean_activation", "dead")


@dataclass(frozen=True)
class ProjectorMetadata:
    """The newest projector metadata of one layer found in a log folder.

    Attributes:
        layer: the layer name (the embedding's tag).
        step: the global step it was written at.
        columns: ``{column: N strings}``, as in ``metadata.tsv``.
        source: the ``metadata.tsv`` file it came from.
    """

    layer: str
    step: int
    columns: dict[str, list[str]]
    source: Path


def find_projector_metadata(log_dir: str | os.PathLike[str]) -> dict[str, ProjectorMetadata]:
    """The newest projector metadata of every layer under ``log_dir`` (searched recursively).

    ``log_dir`` may be a run folder (holding ``projector_config.pbtxt``) or any folder above
    runs; for a layer found in several runs, the entry with the largest step wins, and among
    equal steps the most recently written file.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import write_embedding
        >>> with tempfile.TemporaryDirectory() as logs:
        ...     for step in (5, 9):
        ...         _ = write_embedding(logs, "fc", torch.zeros(2, 3), step,
        ...                             metadata={"layer": ["fc"] * 2, "neuron": [0, 1]})
        ...     found = find_projector_metadata(logs)
        >>> found["fc"].step, found["fc"].columns["neuron"]
        (9, ['0', '1'])
    """
    root = Path(log_dir)
    if not root.is_dir():
        raise SemvecFileNotFoundError(f"Log folder {str(root)!r} does not exist.")
    best: dict[str, tuple[tuple[int, float], ProjectorMetadata]] = {}
    for config in sorted(root.rglob(CONFIG_FILENAME)):
        run = config.parent
        for entry in read_projector_config(run):
            if not entry.metadata_path:
                continue
            path = run / entry.metadata_path
            if not path.is_file():
                continue
            step = entry.step if entry.step is not None else -1
            key = (step, path.stat().st_mtime)
            if entry.tag not in best or key > best[entry.tag][0]:
                columns = read_embedding_metadata(run, entry)
                best[entry.tag] = (key, ProjectorMetadata(entry.tag, step, columns, path))
    return {tag: found for tag, (_, found) in best.items()}


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
) -> Path:
    """Write the report folder of a knowledge file; returns the path of its ``index.html``.

    ``semvec report`` takes its arguments and options from this signature.

    Args:
        knowledge_path: a ``.semvec.safetensors`` knowledge file.
        out_dir: the folder to write (created if needed; files of the same names replaced).
        log_dir: optional TensorBoard log folder of the run that made the knowledge; its
            newest projector metadata adds preferred class, selectivity, mean activation and
            dead/alive per neuron (layers whose neuron count differs are left without them).
        max_heatmap_neurons: the heatmap shows at most this many neurons (evenly spaced).
        neighbours: nearest neighbours listed per neuron.
        max_table_rows: neurons listed per layer (the first ones); the report says how many
            were left out.

    Returns:
        ``<out_dir>/index.html``.

    Raises:
        KnowledgeFileError: if ``knowledge_path`` is not a valid knowledge file.
        SemvecFileNotFoundError: if ``knowledge_path`` or ``log_dir`` does not exist.
        SemvecValueError: if ``max_heatmap_neurons`` is not an integer >= 1, or
            ``neighbours`` or ``max_table_rows`` not one >= 0.

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
    knowledge_path = Path(knowledge_path)
    if not knowledge_path.is_file():
        raise SemvecFileNotFoundError(f"Knowledge file {str(knowledge_path)!r} does not exist.")
    knowledge = StaticKnowledge.load(knowledge_path)
    metadata = find_projector_metadata(log_dir) if log_dir is not None else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = knowledge.class_names
    sections = []
    for position, name in enumerate(knowledge.layer_names):
        vectors = knowledge[name].vectors
        n = vectors.shape[0]
        slug = f"{position:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"
        meta = metadata.get(name)
        note = ""
        if meta is not None and any(len(v) != n for v in meta.columns.values()):
            note = (f"The projector metadata of this layer lists a different number of neurons "
                    f"than its {n} vectors, so it is not shown.")
            meta = None
        ids = evenly_spaced(n, max_heatmap_neurons)
        figure = similarity_heatmaps(semantic_similarity(vectors[ids]), neuron_ids=ids,
                                     title=f"{name}: semantic similarity")
        figure.savefig(out / f"{slug}_similarity.png", dpi=100)
        preferred, dead = _classes_and_dead(meta, class_names, n)
        figure = pca_map(vectors, preferred, class_names, dead, title=f"{name}: PCA of the vectors")
        figure.savefig(out / f"{slug}_pca.png", dpi=100)
        sections.append(
            _layer_section(name, slug, vectors, meta, neighbours, max_table_rows, note,
                           shown=ids.numel())
        )
    (out / "index.html").write_text(_page(knowledge, knowledge_path, log_dir, sections), "utf-8")
    return out / "index.html"


def _classes_and_dead(
    meta: ProjectorMetadata | None, class_names: Sequence[str] | None, n: int
) -> tuple[Tensor | None, Tensor | None]:
    if meta is None:
        return None, None
    preferred = None
    column = meta.columns.get("preferred_class")
    if column is not None and any(column):
        lookup = {c: i for i, c in enumerate(class_names or [])}
        values = []
        for text in column:
            if text in lookup:
                values.append(lookup[text])
            elif text.lstrip("-").isdigit():
                values.append(int(text))
            else:
                values.append(-1)
        preferred = torch.tensor(values, dtype=torch.long)
    dead = None
    column = meta.columns.get("dead")
    if column is not None and any(column):
        dead = torch.tensor([text == "dead" for text in column])
    return preferred, dead


def _layer_section(
    name: str,
    slug: str,
    vectors: Tensor,
    meta: ProjectorMetadata | None,
    neighbours: int,
    max_rows: int,
    note: str,
    shown: int,
) -> str:
    n, d = vectors.shape
    norms = vectors.norm(dim=1)
    rows = min(n, max_rows)
    idx, sim = nearest_neighbours(vectors, neighbours, rows=rows)
    stat_columns = [c for c in _STAT_COLUMNS if meta is not None and c in meta.columns]
    header = ["neuron", *(c.replace("_", " ") for c in stat_columns), "vector norm",
              "nearest neighbours (semantic similarity)"]
    body = []
    for i in range(rows):
        cells = [str(i)]
        cells += [meta.columns[c][i] for c in stat_columns] if meta is not None else []
        cells.append(f"{norms[i].item():.3g}")
        cells.append(", ".join(f"{j} ({s:+.2f})" for j, s in zip(idx[i].tolist(), sim[i].tolist())))
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    source = (
        f"Validation statistics: projector metadata of step {meta.step} "
        f"(<code>{html.escape(str(meta.source))}</code>)."
        if meta is not None
        else "No validation statistics (pass the run's log folder to add them)."
    )
    more = f"<p>{n - rows} more neurons are not listed.</p>" if rows < n else ""
    heatmap_note = f" ({shown} of {n} neurons, evenly spaced)" if shown < n else ""
    return f"""
<section>
<h2>{html.escape(name)}</h2>
<p>{n} neurons, {d}-dimensional vectors. {source} {html.escape(note)}</p>
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
{more}
</section>"""


def _page(
    knowledge: StaticKnowledge,
    knowledge_path: Path,
    log_dir: str | os.PathLike[str] | None,
    sections: list[str],
) -> str:
    facts = [
        ("knowledge file", str(knowledge_path)),
        ("teacher model", knowledge.source_model or "unknown"),
        ("training steps", str(knowledge.training_steps)),
        ("classes", ", ".join(knowledge.class_names) if knowledge.class_names else "unknown"),
        ("log folder", str(log_dir) if log_dir is not None else "not given"),
        ("lightning_semvec", knowledge.package_version),
    ]
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
thead th {{ background: #f0f0f0; position: sticky; top: 0; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }}
img {{ max-width: 100%; }}
section {{ margin-top: 2.5em; }}
</style>
</head>
<body>
<h1>Semantic vectors</h1>
<table>{listing}</table>
{"".join(sections)}
</body>
</html>
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``semvec report`` (kept for ``python -m lightning_semvec.report``); returns its exit status.

    ``argv`` defaults to ``sys.argv[1:]``: ``KNOWLEDGE OUT_DIR [--log-dir DIR]``. The exit
    status is the command line's: 0 on success, 2 for bad arguments or a knowledge file or log
    folder that cannot be read (the reason is printed to stderr).
    """
    from lightning_semvec.cli import main as semvec

    return semvec(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
