"""The matching summary ``semvec embed --compare`` prints: a few lines per layer pair.

The neurons of the first model are matched with their nearest neurons of the other in the joint
space, as in the report's Matching section (:mod:`lightning_semvec.report.matching`), from the
knowledge file alone; the summary groups the matches by layer pair and lists the best and the
worst few, so that its length is bounded whatever the layers' widths.
"""

from __future__ import annotations

import math

from lightning_semvec.functional.neuron_matching import match_neurons
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import joint_models, model_vectors, stored_correlation

__all__ = ["matching_summary"]


def matching_summary(knowledge: StaticKnowledge, max_rows: int) -> list[str]:
    """The terminal's lines on a joint knowledge (none for another): each neuron of the first
    model matched with its nearest neuron of the other in the joint space (as the report's
    Matching section), grouped by layer pair (a layer of the first model, the layer of the
    other its neurons' matches are in): how many matched there, their mean correlation on the
    data (cosine where the file stores none), how many are mutual, and the best and worst
    ``max_rows`` of them.

    Example:
        >>> import torch
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)[[2, 0, 1]]},
        ...     extra={"joint/models": '["a", "b"]'})
        >>> print("\\n".join(matching_summary(knowledge, 2)))
        Matching a → b (each neuron of a with its nearest neuron of b in the joint space, by cosine):
          a/fc → b/fc: 3 of 3 neurons matched there, mean cosine 1.000, 3 mutual
            1. #0 → #1: cosine 1.000, mutual
            ... 1 more
            3. #2 → #0: cosine 1.000, mutual
    """
    models = joint_models(knowledge)
    if models is None:
        return []
    first, *others = models
    lines = []
    for other in others:
        matching = match_neurons(model_vectors(knowledge, models[first]),
                                 model_vectors(knowledge, models[other]))
        best, cosine = matching.indices[:, 0].tolist(), matching.cosine[:, 0].tolist()
        correlation = stored_correlation(knowledge, first, other, matching.indices[:, 0])
        measure, score = ("cosine", cosine) if correlation is None else (
            "correlation", correlation.tolist())
        owner_a, owner_b = _owners(knowledge, models[first]), _owners(knowledge, models[other])
        by_pair: dict[tuple[str, str], list[int]] = {}
        for i, j in enumerate(best):
            if j >= 0:
                by_pair.setdefault((owner_a[i][0], owner_b[j][0]), []).append(i)
        lines.append(f"Matching {first} → {other} (each neuron of {first} with its nearest neuron "
                     f"of {other} in the joint space, by {measure}):")
        for layer in models[first]:
            for other_layer in models[other]:
                rows = by_pair.get((layer, other_layer), [])
                if not rows:
                    continue
                values = [score[i] for i in rows if not math.isnan(score[i])]
                mean = f"{sum(values) / len(values):.3f}" if values else "unknown"
                mutual = sum(bool(matching.mutual[i]) for i in rows)
                lines.append(f"  {layer} → {other_layer}: {len(rows)} of "
                             f"{knowledge[layer].num_neurons} neurons matched there, mean "
                             f"{measure} {mean}, {mutual} mutual")
                order = sorted(rows, key=lambda i: (math.isnan(score[i]), -score[i], -cosine[i]))
                for rank, position in _shown(len(order), max_rows):
                    if position is None:
                        lines.append(f"    ... {rank} more")
                        continue
                    row = order[position]
                    extra = [] if measure == "cosine" else [f"cosine {cosine[row]:.3f}"]
                    extra += ["mutual"] if matching.mutual[row] else []
                    value = "unknown" if math.isnan(score[row]) else f"{score[row]:.3f}"
                    lines.append(f"    {rank:>{len(str(len(order)))}}. #{owner_a[row][1]} → #{owner_b[best[row]][1]}: "
                                 f"{measure} {value}{''.join(f', {e}' for e in extra)}")
            dead = sum(1 for i, (owner, _) in enumerate(owner_a) if owner == layer and best[i] < 0)
            if dead:
                lines.append(f"  {layer}: {dead} of {knowledge[layer].num_neurons} neurons are "
                             "dead (zero vectors), not matched")
    return lines


def _owners(knowledge: StaticKnowledge, layers: list[str]) -> list[tuple[str, int]]:
    """``(layer, neuron)`` of each row of ``model_vectors(knowledge, layers)``."""
    return [(layer, i) for layer in layers for i in range(knowledge[layer].num_neurons)]


def _shown(count: int, max_rows: int) -> list[tuple[int, int | None]]:
    """``(rank, position)`` of the rows to print of ``count`` sorted ones: all up to
    ``max_rows``, else the best half and the worst half with ``(skipped, None)`` between."""
    if count <= max_rows:
        return [(i + 1, i) for i in range(count)]
    top, bottom = (max_rows + 1) // 2, max_rows // 2
    skipped: list[tuple[int, int | None]] = [(count - top - bottom, None)] if max_rows else []
    return ([(i + 1, i) for i in range(top)] + skipped
            + [(i + 1, i) for i in range(count - bottom, count)])
