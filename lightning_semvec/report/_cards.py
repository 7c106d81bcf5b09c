"""Neuron cards: one box per neuron of a telling layer, in the manner of Neuronpedia.

Each card shows what the knowledge file knows of one neuron: its top-activating inputs
(``top_inputs``, as inline PNG thumbnails), its class profile (a bar per class of its mean
activation, ``class_means``; the preferred class darker) or, without one, its preferred class
and selectivity, and its nearest neurons by the cosine of their vectors, each linked to its own
card. Dead neurons (constant on the validation data) say so and list no neighbours.

A class-aligned layer (the logits) shows a card for every neuron, in class order; any other
layer its alive neurons, most selective first. At most ``max_cards`` are shown, with a note.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from lightning_semvec.report._neighbours import nearest_neighbours

__all__ = ["card_anchor", "card_order", "neuron_cards", "profile_svg", "thumbnail_uri"]

# Classes up to this many get their names under the bars; more get tooltips only.
_LABELLED_BARS = 24


def card_anchor(slug: str, neuron: int) -> str:
    """The id of a neuron's card, ``"n-<slug>-<neuron>"``.

    Example:
        >>> card_anchor("05_fc", 3)
        'n-05_fc-3'
    """
    return f"n-{slug}-{neuron}"


def thumbnail_uri(image: Tensor) -> str:
    """A ``data:`` URI of one ``(Ch, S, S)`` uint8 image (``Ch`` 1 or 3) as a PNG.

    Example:
        >>> import torch
        >>> thumbnail_uri(torch.zeros(3, 4, 4, dtype=torch.uint8))[:22]
        'data:image/png;base64,'
    """
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def profile_svg(means: Tensor, names: Sequence[str], preferred: int | None) -> str:
    """A small bar chart of one neuron's mean activation per class, ``(C,)`` ``means``.

    Bars rise from the lowest class mean (so the classes a logit prefers stand out even when
    every mean is negative), the ``preferred`` class's darker; each bar's tooltip names the
    class and value, and up to 24 classes are named under their bars.

    Example:
        >>> import torch
        >>> profile_svg(torch.tensor([0.1, 2.0, -0.5]), ["a", "b", "c"], 1).count("<rect")
        3
    """
    c = means.shape[0]
    values = [float(v) if math.isfinite(float(v)) else math.nan for v in means]
    finite = [v for v in values if v == v] or [0.0]
    low, span = min(finite), (max(finite) - min(finite)) or 1.0
    bar = max(2.0, min(22.0, 272 / c))
    gap = 1.0 if bar > 3 else 0.0
    height = 40.0
    labelled = c <= _LABELLED_BARS
    total = height + (14 if labelled else 2)
    parts = [f'<line x1="0" x2="{c * bar:.1f}" y1="{height:.1f}" y2="{height:.1f}" '
             'stroke="#bbb"/>']
    for k, v in enumerate(values):
        h = 0.0 if v != v else (v - low) / span * (height - 2)
        fill = "#2b6cb0" if k == preferred else "#a0b4c8"
        parts.append(f'<rect x="{k * bar:.1f}" y="{height - max(h, 1.0):.1f}" '
                     f'width="{bar - gap:.1f}" height="{max(h, 1.0):.1f}" fill="{fill}"><title>'
                     f'{html.escape(names[k])}: {v:.3f}</title></rect>')
        if labelled:
            parts.append(f'<text x="{k * bar + (bar - gap) / 2:.1f}" y="{total - 2:.1f}" '
                         f'font-size="10" text-anchor="middle" fill="#555">'
                         f'{html.escape(names[k][:3])}</text>')
    return (f'<svg class="profile" width="{c * bar:.0f}" height="{total:.0f}" '
            f'role="img" aria-label="mean activation per class">{"".join(parts)}</svg>')


def card_order(stats: dict[str, Tensor], num_neurons: int, aligned: bool) -> list[int]:
    """The neurons that get a card, in order: every neuron of a class-aligned layer in class
    order; otherwise the alive neurons, most selective first (file order without
    selectivity).

    Example:
        >>> import torch
        >>> card_order({"selectivity": torch.tensor([0.1, 0.9, 0.5]),
        ...             "dead": torch.tensor([False, False, True])}, 3, False)
        [1, 0]
    """
    if aligned:
        return list(range(num_neurons))
    dead = stats["dead"].tolist() if "dead" in stats else [False] * num_neurons
    alive = [i for i in range(num_neurons) if not dead[i]]
    if "selectivity" not in stats:
        return alive
    selectivity = stats["selectivity"].tolist()

    def key(i: int) -> float:
        value = selectivity[i]
        return -value if value == value and 0 <= value <= 1 + 1e-6 else math.inf

    return sorted(alive, key=key)


def _chip(name: str) -> str:
    return f'<span class="chip">{html.escape(name)}</span>'


def neuron_cards(
    slug: str,
    vectors: Tensor,
    stats: dict[str, Tensor],
    class_names: Sequence[str],
    names: tuple[Sequence[str], Sequence[str]],
    aligned: bool,
    *,
    neighbours: int,
    max_cards: int,
) -> tuple[str, int, int]:
    """The cards of one layer's neurons.

    Args:
        slug: the layer's anchor prefix (see :func:`card_anchor`).
        vectors: its ``(N, d)`` vectors.
        stats: its statistics (any of ``dead``, ``selectivity``, ``preferred_class``,
            ``mean_activation``, ``class_means`` ``(C, N)``, ``top_inputs``).
        class_names: the ``C`` class names (``[]`` when the file has no classes).
        names: ``(long, short)`` names of the ``N`` neurons
            (:func:`~lightning_semvec.report._neighbours.neuron_names`).
        aligned: whether neuron ``i`` is class ``i``.
        neighbours: nearest neurons listed per card.
        max_cards: the most cards shown.

    Returns:
        ``(html, cards shown, neurons that would get a card)``.
    """
    n = vectors.shape[0]
    long, short = names
    order = card_order(stats, n, aligned)
    shown = order[:max_cards]
    dead = stats["dead"].tolist() if "dead" in stats else [False] * n
    alive = ~stats["dead"] if "dead" in stats else None
    idx, sim = nearest_neighbours(vectors, neighbours, alive=alive)
    carded = set(shown)
    cards = []
    for i in shown:
        if aligned:
            title = _chip(long[i]) + ("" if long[i] == str(i)
                                      else f' <span class="sub">neuron {i}</span>')
        else:
            c = int(stats["preferred_class"][i]) if "preferred_class" in stats else -1
            title = f"neuron {i}" + (f' <span class="sub">prefers {_chip(class_names[c])}</span>'
                                     if 0 <= c < len(class_names) and not dead[i] else "")
        facts = []
        if dead[i]:
            facts.append("dead: constant on the validation data")
        else:
            value = float(stats["selectivity"][i]) if "selectivity" in stats else math.nan
            if 0 <= value <= 1 + 1e-6:
                facts.append(f"selectivity {min(value, 1.0):.2f}")
            if "mean_activation" in stats:
                facts.append(f"mean activation {float(stats['mean_activation'][i]):.2f}")
        body = [f'<h4>{title}</h4>', f'<p class="facts">{html.escape(" · ".join(facts))}</p>']
        if "top_inputs" in stats and not dead[i]:
            thumbs = "".join(f'<img src="{thumbnail_uri(image)}" alt="input {k + 1}">'
                             for k, image in enumerate(stats["top_inputs"][i]))
            body.append(f'<div class="thumbs" title="the validation inputs that activate it '
                        f'most, best first">{thumbs}</div>')
        if "class_means" in stats and not dead[i] and class_names:
            means = stats["class_means"][:, i]
            preferred = int(stats["preferred_class"][i]) if "preferred_class" in stats else None
            ranked = means.argsort(descending=True)[:3].tolist()
            top = ", ".join(f"{_chip(class_names[c])} {float(means[c]):.2f}" for c in ranked)
            body.append(f'<div class="profile">{profile_svg(means, class_names, preferred)}'
                        f'<p class="small">highest: {top}</p></div>')
        if not dead[i]:
            near = []
            for j, s in zip(idx[i].tolist(), sim[i].tolist()):
                if j < 0:
                    continue
                label = _chip(short[j]) if aligned else html.escape(short[j])
                near.append(f'<a href="#{card_anchor(slug, j)}">{label}</a> <span class="sim">'
                            f'{s:+.2f}</span>' if j in carded else f"{label} <span "
                            f'class="sim">{s:+.2f}</span>')
            if near:
                body.append(f'<p class="near">nearest: {", ".join(near)}</p>')
        kind = ' class="card dead"' if dead[i] else ' class="card"'
        cards.append(f'<article id="{card_anchor(slug, i)}"{kind}>{"".join(body)}</article>')
    return f'<div class="cards">{"".join(cards)}</div>', len(shown), len(order)
