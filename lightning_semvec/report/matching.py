"""The report's "Matching" sections: which neuron of one model plays which role in another.

For a knowledge file of :func:`~lightning_semvec.embed_models` (see
:mod:`lightning_semvec.knowledge.joint_space`), one section per other model: every neuron of the first
model with its nearest neuron of the other by cosine of the joint vectors
(:func:`~lightning_semvec.functional.match_neurons`), their activation correlation on the
embedding data (stored in the file when the joint similarity was exact), and whether the match
is mutual. Sorted by correlation (by cosine without one), the best ``max_rows`` listed.
"""

from __future__ import annotations

import html
import math

import torch

from lightning_semvec.functional.neuron_matching import match_neurons
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import (
    joint_models,
    model_vectors,
    neuron_names,
    stored_correlation,
)

__all__ = ["matching_sections"]

#: What the section's table shows, under its heading.
MATCHING_NOTE = (
    "The neurons of both models were embedded together from their joint activation similarity "
    "on the same inputs, so their vectors live in one space. For each neuron of {a}, its "
    "nearest neuron of {b} by cosine of the vectors; correlation is the two neurons' "
    "activation similarity on the embedding data; mutual: each is the other's nearest."
)


def matching_sections(knowledge: StaticKnowledge, max_rows: int) -> list[tuple[str, str, int, str]]:
    """``(title, anchor, neurons of the first model, HTML)`` of each Matching section; none for
    a knowledge that is not a joint one.

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
    matching = match_neurons(model_vectors(knowledge, models[a]),
                             model_vectors(knowledge, models[b]))
    best = matching.indices[:, 0]
    cosine = matching.cosine[:, 0]
    correlation = stored_correlation(knowledge, a, b, best)
    names_a, names_b = neuron_names(models[a], knowledge), neuron_names(models[b], knowledge)
    matched = (best >= 0).nonzero().squeeze(1).tolist()
    key = correlation if correlation is not None else cosine
    order = sorted(matched, key=lambda i: (math.isnan(key[i]), -float(key[i]), -float(cosine[i])))
    shown = order[:max_rows]
    rows = "\n".join(
        "<tr>" + f"<td>{html.escape(names_a[i])}</td><td>{html.escape(names_b[best[i]])}</td>"
        + f'<td class="num">{cosine[i]:.3f}</td>'
        + f'<td class="num">{_number(correlation, i)}</td>'
        + f"<td>{'yes' if matching.mutual[i] else 'no'}</td></tr>"
        for i in shown
    )
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
    title = f"Matching: {a} → {b}"
    body = f"""
<section id="{anchor}">
<h2>{html.escape(title)} <a class="top" href="#contents">contents</a></h2>
<p>{html.escape(MATCHING_NOTE.format(a=a, b=b))}</p>
<p>{html.escape(summary)}.</p>
<table>
<thead><tr><th>neuron of {html.escape(a)}</th><th>best neuron of {html.escape(b)}</th>
<th>cosine</th><th>correlation</th><th>mutual</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{note}
</section>"""
    return title, anchor, n, body


def _number(values: torch.Tensor | None, i: int) -> str:
    if values is None or math.isnan(float(values[i])):
        return ""
    return f"{float(values[i]):.3f}"
