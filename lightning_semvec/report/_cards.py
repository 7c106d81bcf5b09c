"""Neuron cards: one box per neuron of a telling layer, in the manner of Neuronpedia.

Each card shows what the knowledge file knows of one neuron: its top-activating inputs
(``top_inputs``, as inline PNG thumbnails), its class profile (a bar per class of its mean
activation, ``class_means``; its own class, or its preferred class, darker) or, without one, its preferred class
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
import torch
from torch import Tensor

from lightning_semvec.report._layer_order import LayerScore
from lightning_semvec.report._neighbours import nearest_neighbours
from lightning_semvec.report._tables import layer_summary, statistics_source

__all__ = [
    "card_anchor",
    "card_order",
    "cards_section",
    "neuron_cards",
    "profile_svg",
    "thumbnail_uri",
]

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


def profile_svg(
    means: Tensor, names: Sequence[str], marked: int | None, other: int | None = None
) -> str:
    """A small bar chart of one neuron's mean activation per class, ``(C,)`` ``means``.

    Bars rise from the lowest class mean (so the classes a logit prefers stand out even when
    every mean is negative), the ``marked`` class's dark blue (a logit's own class, any other
    neuron's preferred class) and an ``other`` class orange (the class a logit responds to
    more than to its own); each bar's tooltip names the
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
        fill = "#2b6cb0" if k == marked else "#dd8452" if k == other else "#a0b4c8"
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
    embedded: bool = False,
) -> tuple[str, list[int], int]:
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
        embedded: the statistics come from the embedding data, not a validation epoch.

    Returns:
        ``(html, the neurons shown in order, how many neurons would get a card)``.
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
            facts.append(f"dead: constant on {'the data it was embedded on' if embedded else 'the validation data'}")
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
            marked, other = (i, preferred if preferred != i else None) if aligned else (preferred, None)
            ranked = means.argsort(descending=True)[:3].tolist()
            top = ", ".join(f"{_chip(class_names[c])} {float(means[c]):.2f}" for c in ranked)
            body.append(f'<div class="profile">{profile_svg(means, class_names, marked, other)}'
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
    return f'<div class="cards">{"".join(cards)}</div>', shown, len(order)


def cards_section(
    score: LayerScore, cards: str, shown: int, total: int, dim: int,
    aligned_stats: dict[str, Tensor] | None, embedded: bool, heatmap_neurons: int,
    explain: str = "",
    has_statistics: bool = True,
) -> str:
    """A telling layer's section: its cards (:func:`neuron_cards`), notes on those left out,
    how far its vectors explain (``explain``, HTML) and its heatmap.

    ``aligned_stats``: the statistics of a class-aligned layer (``None`` for any other), to
    say how many class neurons prefer another class.
    """
    n = score.neurons
    notes = []
    if shown < total:
        order = "in class order" if aligned_stats is not None else "the most selective first"
        notes.append(f"{total - shown} more neurons have no card (max_cards={shown}; cards go "
                     f"{order}).")
    if total < n:
        notes.append(f"{n - total} dead neurons have no card.")
    if aligned_stats is not None and "preferred_class" in aligned_stats:
        alive = (~aligned_stats["dead"] if "dead" in aligned_stats
                 else torch.ones(n, dtype=torch.bool))
        other = int(((aligned_stats["preferred_class"] != torch.arange(n)) & alive).sum())
        if other:
            notes.append(f"{other} of {int(alive.sum())} class neurons respond most, on average, "
                         "to another class's inputs. Logits are read raw: softmax ignores an "
                         "offset common to all of an input's logits, so inputs whose logits are "
                         "all large can top several classes' profiles.")
    note = "".join(f'<p class="note">{html.escape(t)}</p>' for t in notes)
    heatmap_note = f" ({heatmap_neurons} of {n} neurons, evenly spaced)" if heatmap_neurons < n else ""
    what = "class" if aligned_stats is not None else "neuron"
    source = statistics_source(has_statistics, embedded)
    bars = ("its own class dark blue, another class it responds to more orange"
            if aligned_stats is not None else "its preferred class dark blue")
    return f"""
<section id="{score.slug}" class="layer">
<h2>Neuron cards: {html.escape(score.name)} <a class="top" href="#top">top</a></h2>
<p>{html.escape(layer_summary(score, dim, embedded))} {html.escape(source)} One card per {what}: the inputs that
activate it most, best first; a bar per class of its mean activation, rising from the lowest
class mean, {bars} (hover a bar for its class); and its nearest neurons by the cosine of their
vectors (click one to go to its card).</p>
{note}
{explain}
{cards}
<figure><img src="{score.slug}_similarity.png" alt="semantic similarity of {html.escape(score.name)}">
<figcaption>Semantic similarity of {html.escape(score.name)}{heatmap_note}, neurons ordered by
hierarchical clustering.</figcaption></figure>
</section>"""
