"""The matching summary ``semvec embed --compare`` prints: a few lines per layer pair.

The neurons of the first model are matched with their nearest neurons of the other in the joint
space, as in the report's Matching section (:mod:`lightning_semvec.report.matching`), from the
knowledge file alone; the summary groups the matches by layer pair and lists the best and the
worst few, so that its length is bounded whatever the layers' widths. Before them, the linear
CKA between the two models' layers as a small table (when the file stores it); in the rows,
each neuron's preferred class (when the file has class statistics) and the hubs, neurons the
best match of many (:mod:`lightning_semvec.report._joint_reading`), each explained once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from lightning_semvec.functional.neuron_matching import match_neurons
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import (
    joint_models,
    model_vectors,
    stored_cka,
    stored_correlation,
)
from lightning_semvec.report._joint_reading import (
    CKA_FEATURE_WORDS,
    hub_rule,
    hub_sentence,
    matching_hubs,
    preferred_classes,
    short_layer,
)

__all__ = ["cka_table", "matching_summary"]

#: The widest CKA table printed with the layers' names as column heads; a wider one numbers them.
MAX_TABLE_WIDTH = 100
#: Hubs explained by name per model pair; the others are counted.
MAX_HUBS_NAMED = 5


def matching_summary(knowledge: StaticKnowledge, max_rows: int) -> list[str]:
    """The terminal's lines on a joint knowledge (none for another): each neuron of the first
    model matched with its nearest neuron of the other in the joint space (as the report's
    Matching section), grouped by layer pair (a layer of the first model, the layer of the
    other its neurons' matches are in): how many matched there, their mean correlation on the
    data (cosine where the file stores none), how many are mutual, and the best and worst
    ``max_rows`` of them, each with its preferred classes when the file has them and flagged
    when its match is a hub. Before the pairs, the CKA between the layers (:func:`cka_table`);
    after them, each hub in a sentence.

    Raises:
        KnowledgeFileError: the knowledge's stored CKA is malformed.

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
        vectors_b = model_vectors(knowledge, models[other])
        matching = match_neurons(model_vectors(knowledge, models[first]), vectors_b)
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
        cka = stored_cka(knowledge)
        if cka is not None:
            lines.append(f"  Linear CKA between the layers (rows: {first}, columns: {other}; "
                         f"{cka.minibatches} minibatches; {CKA_FEATURE_WORDS[cka.features]}):")
            lines += cka_table(cka.block(models[first], models[other]),
                               [short_layer(n) for n in models[first]],
                               [short_layer(n) for n in models[other]], indent="    ")
        hubs = matching_hubs(matching.indices[:, 0], vectors_b.norm(dim=1) > 0)
        found_a = preferred_classes(knowledge, models[first])
        found_b = preferred_classes(knowledge, models[other])
        with_classes = found_a is not None or found_b is not None
        classes_a, classes_b = found_a or [""] * len(owner_a), found_b or [""] * len(owner_b)
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
                    if with_classes:  # "-": dead, or a layer without class statistics
                        extra.append(f"class {classes_a[row] or '-'} → {classes_b[best[row]] or '-'}")
                    if best[row] in hubs.hubs:
                        extra.append(f"hub (best match of {int(hubs.counts[best[row]])})")
                    value = "unknown" if math.isnan(score[row]) else f"{score[row]:.3f}"
                    lines.append(f"    {rank:>{len(str(len(order)))}}. #{owner_a[row][1]} → #{owner_b[best[row]][1]}: "
                                 f"{measure} {value}{''.join(f', {e}' for e in extra)}")
            dead = sum(1 for i, (owner, _) in enumerate(owner_a) if owner == layer and best[i] < 0)
            if dead:
                lines.append(f"  {layer}: {dead} of {knowledge[layer].num_neurons} neurons are "
                             "dead (zero vectors), not matched")
        if hubs.hubs:
            lines.append(f"  Hubs: {hub_rule(first, other, hubs)}")
            for j in hubs.hubs[:MAX_HUBS_NAMED]:
                layer, neuron = owner_b[j]
                lines.append("    " + hub_sentence(first, other, f"{short_layer(layer)} #{neuron}",
                                                   int(hubs.counts[j])))
            if len(hubs.hubs) > MAX_HUBS_NAMED:
                lines.append(f"    ... {len(hubs.hubs) - MAX_HUBS_NAMED} more hubs")
    return lines


def cka_table(
    cka: Tensor, rows: Sequence[str], columns: Sequence[str], indent: str = ""
) -> list[str]:
    """The lines of a CKA matrix as a table: a head of the column names, then one line per row,
    values to 3 decimals (``n/a`` for a constant layer). When the head would be wider than
    :data:`MAX_TABLE_WIDTH`, the columns are numbered and named on a last line.

    Args:
        cka: ``(len(rows), len(columns))`` CKA.
        rows, columns: the layers' names.
        indent: put before every line.

    Example:
        >>> import torch
        >>> print("\\n".join(cka_table(torch.tensor([[0.9, 0.2], [0.3, float("nan")]]),
        ...                            ["conv", "fc"], ["c1", "logits"])))
                 c1  logits
        conv  0.900   0.200
        fc    0.300     n/a
    """
    width = max(len(name) for name in rows)
    cells = [[("n/a" if math.isnan(v) else f"{v:.3f}") for v in row] for row in cka.tolist()]
    heads = list(columns)
    numbered = width + sum(max(len(h), 5) + 2 for h in heads) > MAX_TABLE_WIDTH
    if numbered:
        heads = [f"[{j + 1}]" for j in range(len(columns))]
    sizes = [max(len(h), 5) for h in heads]
    lines = [indent + " " * width + "".join(f"  {h:>{size}}" for h, size in zip(heads, sizes))]
    lines += [indent + f"{name:<{width}}" + "".join(f"  {c:>{size}}" for c, size in zip(row, sizes))
              for name, row in zip(rows, cells)]
    if numbered:
        lines.append(indent + "columns: " + ", ".join(f"[{j + 1}] {name}" for j, name in enumerate(columns)))
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
