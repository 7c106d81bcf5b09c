"""The report's "Matching" sections: which neuron of one model plays which role in another.

For a knowledge file of :func:`~lightning_semvec.embed_models` (see
:mod:`lightning_semvec.knowledge.joint_space`), one section per other model: the linear CKA
between the two models' layers as a heatmap (when the file stores it) with, for each layer of
the first model, the layer of the other it is most like; both models' neurons in one PCA map;
the hubs (a neuron that is the best match of more than 3 neurons of the first model and of
more than 3 times its even share of them, the matched neurons of the first model over the alive
neurons of the other); and the table: every neuron of the first model
with its nearest neuron of the other by cosine of the joint vectors
(:func:`~lightning_semvec.functional.match_neurons`), each one's preferred class (when the
file has class statistics), their activation correlation on the embedding data (stored in the
file when the joint similarity was exact), whether the match is mutual and of how many neurons
the match is the best match. Sorted by correlation (by cosine without one), the best
``max_rows`` listed. The figures are inline PNGs, so the section is one piece of HTML.
"""

from __future__ import annotations

import base64
import html
import math

import torch

from lightning_semvec.functional.neuron_matching import NeuronMatching, match_neurons
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import (
    joint_models,
    model_vectors,
    neuron_names,
    stored_cka,
    stored_correlation,
)
from lightning_semvec.report._joint_figures import cka_heatmap, joint_pca_map, png_bytes
from lightning_semvec.report._joint_reading import (
    CKA_FEATURE_WORDS,
    Hubs,
    hub_rule,
    hub_sentence,
    matching_hubs,
    most_like,
    preferred_classes,
)

__all__ = ["matching_sections"]

#: What the section's table shows, under its heading.
MATCHING_NOTE = (
    "The neurons of both models were embedded together from their joint activation similarity "
    "on the same inputs, so their vectors live in one space. For each neuron of {a}, its "
    "nearest neuron of {b} by cosine of the vectors; correlation is the two neurons' "
    "activation similarity on the embedding data; mutual: each is the other's nearest; best "
    "match of: of how many neurons of {a} the neuron of {b} is the best match."
)
#: Added to it when the file has class statistics.
CLASS_NOTE = (" Preferred class: the class on which the neuron's mean activation is highest "
              "(none for a dead neuron).")
#: What the CKA heatmap shows, under it.
CKA_NOTE = (
    "Linear CKA (Kornblith et al., 2019) between each layer of {a} (rows) and each layer of {b} "
    "(columns) on the embedding data, of {features}, with the unbiased minibatch estimator "
    "(Nguyen et al., 2021) over {minibatches} minibatches: 1 for layers whose representations are alike up to "
    "a rotation and a scale, near 0 for unrelated ones. It compares whole layers; the table "
    "below matches single neurons."
)
#: Hubs listed by name in a section; the others are counted.
MAX_HUBS_NAMED = 5


def matching_sections(knowledge: StaticKnowledge, max_rows: int) -> list[tuple[str, str, int, str]]:
    """``(title, anchor, neurons of the first model, HTML)`` of each Matching section; none for
    a knowledge that is not a joint one.

    Raises:
        KnowledgeFileError: the knowledge's stored CKA is malformed
            (:func:`~lightning_semvec.knowledge.joint_space.stored_cka`).

    Example:
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)[[2, 0, 1]]},
        ...     extra={"joint/models": '["a", "b"]'})
        >>> [(title, anchor, n) for title, anchor, n, _ in matching_sections(knowledge, 10)]
        [('Matching: a → b', 'matching-1', 3)]
    """
    models = joint_models(knowledge)
    if models is None:
        return []
    first, *others = models
    return [_section(knowledge, models, first, other, f"matching-{i}", max_rows)
            for i, other in enumerate(others, start=1)]


def _section(
    knowledge: StaticKnowledge, models: dict[str, list[str]], a: str, b: str, anchor: str,
    max_rows: int,
) -> tuple[str, str, int, str]:
    vectors_a, vectors_b = model_vectors(knowledge, models[a]), model_vectors(knowledge, models[b])
    matching = match_neurons(vectors_a, vectors_b)
    best = matching.indices[:, 0]
    cosine = matching.cosine[:, 0]
    correlation = stored_correlation(knowledge, a, b, best)
    names_a, names_b = neuron_names(models[a], knowledge), neuron_names(models[b], knowledge)
    matched = (best >= 0).nonzero().squeeze(1).tolist()
    key = correlation if correlation is not None else cosine
    order = sorted(matched, key=lambda i: (math.isnan(key[i]), -float(key[i]), -float(cosine[i])))
    shown = order[:max_rows]
    hubs = matching_hubs(best, vectors_b.norm(dim=1) > 0)
    classes_a = preferred_classes(knowledge, models[a])
    classes_b = preferred_classes(knowledge, models[b])
    with_classes = classes_a is not None or classes_b is not None
    rows = "\n".join(_row(i, int(best[i]), names_a, names_b, classes_a, classes_b, with_classes,
                           float(cosine[i]), _number(correlation, i), bool(matching.mutual[i]),
                           int(hubs.counts[best[i]]), int(best[i]) in hubs.hubs)
                      for i in shown)
    n = best.shape[0]
    mutual = int(matching.mutual.sum())
    summary = f"{mutual} of {len(matched)} matched neurons of {a} are mutual nearest neighbours"
    if correlation is not None and not bool(correlation[best >= 0].isnan().all()):
        summary += f"; median correlation {float(correlation[best >= 0].nanmedian()):.3f}"
    notes = []
    if n > len(matched):
        notes.append(f"{n - len(matched)} neurons of {a} are dead (zero vectors) and have no "
                     "match.")
    if correlation is None:
        notes.append("This file stores no correlations (the joint similarity was sketched, "
                     "not exact): sorted by cosine.")
    if len(order) > len(shown):
        notes.append(f"{len(order) - len(shown)} more matched neurons are not listed "
                     f"(max_matching_rows={max_rows}).")
    note = "".join(f'<p class="note">{html.escape(t)}</p>' for t in notes)
    class_head = "<th>preferred class</th>" if with_classes else ""
    title = f"Matching: {a} → {b}"
    body = f"""
<section id="{anchor}">
<h2>{html.escape(title)} <a class="top" href="#contents">contents</a></h2>
<p>{html.escape(MATCHING_NOTE.format(a=a, b=b) + (CLASS_NOTE if with_classes else ""))}</p>
<p>{html.escape(summary)}.</p>
{_figures(knowledge, models, a, b, vectors_a, vectors_b, matching, order)}
{_hubs(a, b, hubs, names_b)}
<table>
<thead><tr><th>neuron of {html.escape(a)}</th>{class_head}<th>best neuron of {html.escape(b)}</th>
{class_head}<th>cosine</th><th>correlation</th><th>mutual</th><th>best match of</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{note}
</section>"""
    return title, anchor, n, body


def _row(
    i: int, j: int, names_a: list[str], names_b: list[str], classes_a: list[str] | None,
    classes_b: list[str] | None, with_classes: bool, cosine: float, correlation: str,
    mutual: bool, count: int, hub: bool,
) -> str:
    """One table row: neuron ``i`` of A and its best match ``j`` of B."""
    def cls(classes: list[str] | None, k: int) -> str:
        return f"<td>{html.escape(classes[k]) if classes else ''}</td>" if with_classes else ""

    return ("<tr>" + f"<td>{html.escape(names_a[i])}</td>{cls(classes_a, i)}"
            + f"<td>{html.escape(names_b[j])}</td>{cls(classes_b, j)}"
            + f'<td class="num">{cosine:.3f}</td><td class="num">{correlation}</td>'
            + f"<td>{'yes' if mutual else 'no'}</td>"
            + f'<td class="num">{count}{" (hub)" if hub else ""}</td></tr>')


def _figures(
    knowledge: StaticKnowledge, models: dict[str, list[str]], a: str, b: str,
    vectors_a: torch.Tensor, vectors_b: torch.Tensor, matching: NeuronMatching, order: list[int],
) -> str:
    """The CKA heatmap (or why there is none) and the joint PCA map, with what they say."""
    parts, figures = [], []
    cka = stored_cka(knowledge)
    if cka is None:
        parts.append('<p class="note">This file stores no CKA between the layers (written before '
                     "lightning_semvec streamed it, or no batch had 4 inputs): embed the models "
                     "again to get it.</p>")
    else:
        block = cka.block(models[a], models[b])
        rows = [layer.partition("/")[2] for layer in models[a]]
        columns = [layer.partition("/")[2] for layer in models[b]]
        figure = cka_heatmap(block, rows, columns, row_title=a, column_title=b,
                             title=f"Linear CKA, {a} vs {b}")
        figures.append((figure, f"linear CKA between the layers of {a} and {b}",
                        CKA_NOTE.format(a=a, b=b, minibatches=cka.minibatches,
                                        features=CKA_FEATURE_WORDS[cka.features])))
        reading = most_like(block, models[a], models[b])
        parts.append("<ul>" + "".join(f"<li>{html.escape(line)}.</li>" for line in reading)
                     + "</ul>")
    pairs = [(i, int(matching.indices[i, 0])) for i in order if matching.mutual[i]]
    pca = joint_pca_map(vectors_a, vectors_b, (a, b), pairs,
                        title=f"{a} and {b}: the neurons' joint vectors, PCA")
    if pca is not None:
        figures.append((pca, f"PCA map of the neurons of {a} and {b}",
                        f"Both models' neurons on the first two principal components of their "
                        f"joint vectors ({a}: circles, {b}: triangles); lines join mutual "
                        "matches, the best first. Dead neurons are left out."))
    images = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(png_bytes(f)).decode()}" '
        f'alt="{html.escape(alt)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for f, alt, caption in figures)
    return f'<div class="figures">{images}</div>' + "".join(parts)


def _hubs(a: str, b: str, hubs: Hubs, names_b: list[str]) -> str:
    """The hubs of the matching, each in one sentence, and the rule; nothing without hubs."""
    if not hubs.hubs:
        return ""
    named = [hub_sentence(a, b, names_b[j], int(hubs.counts[j])) for j in hubs.hubs[:MAX_HUBS_NAMED]]
    more = len(hubs.hubs) - len(named)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in named)
    if more:
        items += f"<li>{more} more hubs (flagged in the table).</li>"
    return f'<ul class="hubs">{items}</ul><p class="note">{html.escape(hub_rule(a, b, hubs))}</p>'


def _number(values: torch.Tensor | None, i: int) -> str:
    if values is None or math.isnan(float(values[i])):
        return ""
    return f"{float(values[i]):.3f}"
