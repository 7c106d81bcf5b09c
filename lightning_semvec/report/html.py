"""A static HTML report of a knowledge file that leads with what the network learned.

:func:`write_report` reads a knowledge file (see :mod:`lightning_semvec.knowledge`) and writes
a folder that any browser opens without a server:

.. code-block:: text

    <out_dir>/index.html                    the report
    <out_dir>/<nn>_<layer>_similarity.png   semantic similarity heatmap (clustered order)
    <out_dir>/<nn>_<layer>_pca.png          PCA map of the vectors (layers without cards)

The page, top to bottom:

1. **What this network learned**: the most telling layer (ranked by held-out fidelity and mean
   class selectivity, :mod:`~lightning_semvec.report._layer_order`; usually the logits), its
   neurons on a labelled map of their vectors (:mod:`~lightning_semvec.report._map`) and, in
   words, each neuron's nearest neurons ("``O`` is closest to ``0``, ``Q``, ``D``"). A layer
   with one neuron per class is named by class; any other neuron by its preferred class
   (:mod:`~lightning_semvec.report._neighbours`).
2. **Neuron cards** of the telling layer(s): top-activating inputs, class profile, nearest
   neurons (:mod:`~lightning_semvec.report._cards`).
3. **The other layers**, in the same order: figures and a table of their neurons
   (:mod:`~lightning_semvec.report._tables`), columns that read the same on every row left out.
4. The "Matching" sections of a knowledge file of :func:`~lightning_semvec.embed_models`
   (:mod:`lightning_semvec.report.matching`).
5. **About this file**: metadata, the layers' ranking and its rule, what selectivity means.

Dead neurons (constant on the validation data) have no preferred class, selectivity or
neighbours, and are nobody's neighbour.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path

from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.files import check_output_folder, staged_folder
from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.analysis.figures import pca_map, similarity_heatmaps
from lightning_semvec.errors import SemvecFileNotFoundError
from lightning_semvec.functional.similarity import semantic_similarity
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.report._agreement import (
    Agreement,
    agreement_sentence,
    checked_confusion,
    confusion_agreement,
    explanation_block,
    profiles_of,
)
from lightning_semvec.report._cards import cards_section, neuron_cards
from lightning_semvec.report._layer_order import LayerScore, rank_layers
from lightning_semvec.report._neighbours import (
    class_aligned,
    class_names_of,
    nearest_neighbours,
    neuron_names,
)
from lightning_semvec.report._page import about_section, lead_section, page
from lightning_semvec.report._tables import layer_section
from lightning_semvec.report.matching import matching_sections

__all__ = [
    "nearest_neighbours",
    "write_report",
]


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
    card_layers: int = 1,
    max_cards: int = 64,
    confusion: Tensor | None = None,
) -> Path:
    """Write the report folder of a knowledge file; returns the path of its ``index.html``.

    The folder is written whole or not at all: the page and figures go to a hidden folder
    beside ``out_dir`` and replace it only once all are written, so a failed write (a full disk)
    leaves a previous report as it was.

    ``semvec report`` takes its arguments and options from this signature.

    Args:
        knowledge_path: a ``.semvec.safetensors`` knowledge file. When it carries per-neuron
            statistics (files exported after an analysed validation epoch), the neurons are
            named by their class or preferred class, the cards show their class profile and
            top-activating inputs, the tables their selectivity and mean activation, and the
            dead ones are marked.
        out_dir: the folder to write (created, with its parents, if needed).
        log_dir: deprecated and ignored: the statistics now come from the knowledge file.
        max_heatmap_neurons: the heatmap shows at most this many neurons (evenly spaced).
        neighbours: nearest neighbours listed per neuron.
        max_table_rows: neurons listed in each layer's table (the first ones); the report
            says how many were left out.
        max_matching_rows: matched neurons listed in each "Matching" section of a joint
            knowledge file (``lightning_semvec.embed_models``), best correlation first.
        overwrite: replace ``out_dir`` as a whole if it holds files (another run's report);
            by default that is an error, raised before anything is written.
        card_layers: the most telling layers that get a card per neuron (0: none; the first
            is also the one the page opens on).
        max_cards: cards per layer at most (a class-aligned layer's in class order, any other
            layer's most selective alive neurons first); the report says how many were left
            out. 64 covers the logits of 62 classes.
        confusion: optional ``(C, C)`` counts of the network's predictions on held-out data
            (rows: true class, columns: prediction; ``torchmetrics``'
            ``MulticlassConfusionMatrix``), ``C`` the class count of the logits (the most
            telling layer with one neuron per class). The page then says how well the logits'
            look-alikes agree with what the network confuses (:mod:`~lightning_semvec.report._agreement`).
            Every layer with class means is held against its neurons' class profiles either way.

    Returns:
        ``<out_dir>/index.html``.

    Raises:
        KnowledgeFileError: if ``knowledge_path`` is not a valid knowledge file.
        SemvecFileNotFoundError: if ``knowledge_path`` does not exist.
        SemvecFileExistsError: if ``out_dir`` holds files and ``overwrite`` is false.
        SemvecValueError: if ``max_heatmap_neurons`` is not an integer >= 1, or
            ``neighbours``, ``max_table_rows``, ``max_matching_rows``, ``card_layers`` or
            ``max_cards`` not one >= 0; if ``confusion`` is not square, holds negative or
            non-finite counts, or does not match the logits' class count (or the file has no
            layer with one neuron per class).
        SemvecTypeError: if ``confusion`` is not a real-valued tensor.

    Example:
        >>> import tempfile, os, torch
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"fc": torch.eye(4)[:, :3] + 0.1}, class_names=["a", "b", "c", "d"])
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = knowledge.save(os.path.join(tmp, "k.semvec.safetensors"))
        ...     index = write_report(path, os.path.join(tmp, "report"))
        ...     sorted(p.name for p in index.parent.iterdir())
        ['00_fc_similarity.png', 'index.html']
    """
    check_int("max_heatmap_neurons", max_heatmap_neurons, 1)
    check_int("neighbours", neighbours, 0)
    check_int("max_table_rows", max_table_rows, 0)
    check_int("max_matching_rows", max_matching_rows, 0)
    check_int("card_layers", card_layers, 0)
    check_int("max_cards", max_cards, 0)
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
    scores = rank_layers(knowledge)
    checked = checked_confusion(confusion, knowledge, [s.name for s in scores])
    final = check_output_folder(out_dir, overwrite)
    with staged_folder(final) as out:
        _write_pages(knowledge, knowledge_path, out, scores, checked,
                     max_heatmap_neurons=max_heatmap_neurons,
                     neighbours=neighbours, max_table_rows=max_table_rows,
                     max_matching_rows=max_matching_rows, card_layers=card_layers,
                     max_cards=max_cards)
    return final / "index.html"


def _agreements(
    knowledge: StaticKnowledge, scores: list[LayerScore], confusion: tuple[str, Tensor] | None
) -> dict[str, list[Agreement]]:
    """Each layer's comparisons, in page order: the logits against the network's confusion
    (when given), every layer with class means against its class profiles."""
    found: dict[str, list[Agreement]] = {}
    for score in scores:
        layer = found.setdefault(score.name, [])
        if confusion is not None and confusion[0] == score.name:
            layer.append(confusion_agreement(knowledge, score.name, confusion[1]))
        profiles = profiles_of(knowledge, score.name)
        if profiles is not None:
            layer.append(profiles)
    return found


def _write_pages(
    knowledge: StaticKnowledge, knowledge_path: Path, out: Path, scores: list[LayerScore],
    confusion: tuple[str, Tensor] | None, *, max_heatmap_neurons: int, neighbours: int,
    max_table_rows: int, max_matching_rows: int, card_layers: int, max_cards: int,
) -> None:
    """Write the figures and ``index.html`` of ``knowledge`` into ``out``; ``confusion``:
    the logits layer and its checked held-out confusion counts."""
    agreements = _agreements(knowledge, scores, confusion)
    embedded = "embedded" in knowledge.extra
    with_cards = card_layers if max_cards else 0
    matching = matching_sections(knowledge, max_matching_rows)
    jumps = [(s.slug, f"cards: {s.name}" if rank < with_cards else s.name)
             for rank, s in enumerate(scores)]
    jumps += [(anchor, title) for title, anchor, _, _ in matching]
    jumps.append(("about", "about this file"))
    nav = '<nav class="jump">Jump to: ' + " ".join(
        f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title in jumps) + "</nav>"
    sections: list[str] = []
    lead = ('<header id="top"><h1>What this network learned</h1><p class="lede">No layer of '
            f"this file learned anything (see the end of the page).</p></header>{nav}")
    for rank, score in enumerate(scores):
        vectors = knowledge.vectors(score.name)
        stats = knowledge.statistics(score.name)
        n = vectors.shape[0]
        names = class_names_of(knowledge.class_names, knowledge[score.name].num_classes)
        aligned = class_aligned(n, names)
        long, short = neuron_names(n, stats, names, aligned)
        ids = evenly_spaced(n, max_heatmap_neurons)
        figure = similarity_heatmaps(semantic_similarity(vectors[ids]), neuron_ids=ids,
                                     title=f"{score.name}: semantic similarity")
        figure.savefig(out / f"{score.slug}_similarity.png", dpi=100)
        # The first layer's comparisons are on the first screen already (explanation_block).
        explain = "" if rank == 0 else "".join(agreement_sentence(a, short, where=True)
                                               for a in agreements[score.name])
        carded: list[int] = []
        if rank < with_cards:
            cards, carded, total = neuron_cards(score.slug, vectors, stats, names, (long, short),
                                                aligned, neighbours=neighbours,
                                                max_cards=max_cards, embedded=embedded)
            sections.append(cards_section(score, cards, len(carded), total, vectors.shape[1],
                                          stats if aligned else None, embedded, ids.numel(),
                                          explain, has_statistics=bool(stats)))
        else:
            figure = pca_map(vectors, stats.get("preferred_class"), names or None,
                             stats.get("dead"), title=f"{score.name}: PCA of the vectors")
            figure.savefig(out / f"{score.slug}_pca.png", dpi=100)
            sections.append(layer_section(score, vectors, stats, names, short,
                                          neighbours=neighbours, max_rows=max_table_rows,
                                          shown=ids.numel(), embedded=embedded, explain=explain))
        if rank == 0:
            explained = explanation_block(
                agreements, score.name, short, {s.name: s.slug for s in scores},
                logits_without_confusion=confusion is None and aligned)
            lead = lead_section(knowledge, knowledge_path, score, stats, (long, short), aligned,
                                neighbours=neighbours, max_listed=max(max_cards, 10),
                                carded=set(carded), explained=explained, nav=nav)
    parts = [lead, *sections, *(section for *_, section in matching),
             about_section(knowledge, knowledge_path, scores)]
    (out / "index.html").write_text(page(knowledge_path.name, parts), "utf-8")
