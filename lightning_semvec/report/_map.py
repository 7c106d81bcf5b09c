"""The map of a layer's neurons by their vectors: an inline SVG, every point labelled.

Points are the vectors' first two principal components
(:func:`~lightning_semvec.analysis.figures.pca_2d`: unit vectors, so near means a high cosine,
neurons that fire together), drawn at one scale on both axes. Each point carries its label
(placed where it overlaps the fewest others), a tooltip and a link to its neuron card; its
colour is its class or preferred class, dead neurons hollow and grey. SVG text stays sharp at
any zoom and needs no figure file.
"""

from __future__ import annotations

import colorsys
import html
from collections.abc import Sequence

from torch import Tensor

from lightning_semvec.analysis.figures import pca_2d

__all__ = ["class_colour", "neuron_map_svg"]

# matplotlib's "tab10", which the other figures use for up to ten classes.
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
_DEAD = "#aaaaaa"
# A monospace face tells look-alike glyph names apart (O and 0, l, I and 1), as the chips do.
_FONT = "ui-monospace, DejaVu Sans Mono, Menlo, Consolas, monospace"
# Label offsets from a point, tried in this order: right, left, above, below, diagonals.
_OFFSETS = ((9, 5), (-9, 5), (0, -9), (0, 17), (8, -6), (-8, -6), (8, 15), (-8, 15))


def class_colour(c: int, num_classes: int) -> str:
    """A colour for class ``c`` of ``num_classes``: tab10 up to ten, else evenly spaced hues
    in three lightnesses (so neighbours in class order differ).

    Example:
        >>> class_colour(0, 10), class_colour(61, 62)
        ('#1f77b4', '#492ac6')
    """
    if num_classes <= len(_TAB10):
        return _TAB10[c % len(_TAB10)]
    hue = (c * 0.618033988749895) % 1.0  # golden-ratio steps: far apart in order
    lightness = (0.35, 0.47, 0.59)[c % 3]
    r, g, b = colorsys.hls_to_rgb(hue, lightness, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two ``(x0, y0, x1, y1)`` boxes."""
    dx = min(a[2], b[2]) - max(a[0], b[0])
    dy = min(a[3], b[3]) - max(a[1], b[1])
    return dx * dy if dx > 0 and dy > 0 else 0.0


def neuron_map_svg(
    vectors: Tensor,
    labels: Sequence[str],
    titles: Sequence[str],
    colours: Sequence[str | None],
    links: Sequence[str | None],
    *,
    width: int = 620,
    height: int = 560,
    caption: str = "",
) -> str:
    """An SVG map of ``(N, d)`` vectors, one labelled point per neuron.

    Args:
        vectors: the layer's ``(N, d)`` vectors.
        labels: ``N`` short labels drawn beside the points.
        titles: ``N`` tooltips (the neuron's long name and neighbours).
        colours: ``N`` CSS colours; ``None`` marks a dead neuron (hollow, grey).
        links: ``N`` anchors (``"#..."``) of the neurons' cards, or ``None``.
        width, height: size in CSS pixels.
        caption: accessible name of the picture.

    Returns:
        The ``<svg>`` element as text.

    Example:
        >>> import torch
        >>> svg = neuron_map_svg(torch.eye(3), ["a", "b", "c"], ["a", "b", "c"],
        ...                      ["#000", "#111", None], [None, None, None])
        >>> svg.count("<circle"), svg.count("<text")
        (3, 3)
    """
    n = vectors.shape[0]
    xy = pca_2d(vectors).double()
    pad = 36.0
    span = (xy.max(dim=0).values - xy.min(dim=0).values).clamp(min=1e-9)
    scale = min((width - 2 * pad) / float(span[0]), (height - 2 * pad) / float(span[1]))
    centre = (xy.max(dim=0).values + xy.min(dim=0).values) / 2
    points = [(width / 2 + scale * float(x - centre[0]), height / 2 - scale * float(y - centre[1]))
              for x, y in xy]
    font = 15 if n <= 20 else 13 if n <= 64 else 10
    taken = [(x - 5, y - 5, x + 5, y + 5) for x, y in points]
    parts = []
    for i, (x, y) in enumerate(points):
        text_width = 0.62 * font * len(labels[i]) + 2  # monospace advance
        best, best_cost = None, float("inf")
        for dx, dy in _OFFSETS:
            left = x + dx if dx > 0 else x + dx - text_width if dx < 0 else x - text_width / 2
            box = (left, y + dy - font, left + text_width, y + dy)
            cost = sum(_overlap(box, other) for other in taken)
            cost += 1e4 * (box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height)
            if cost < best_cost:
                best, best_cost = box, cost
        assert best is not None
        taken.append(best)
        colour = colours[i]
        circle = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>' if colour
                  else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="white" '
                  f'stroke="{_DEAD}" stroke-width="1.5"/>')
        text = (f'<text x="{best[0] + 1:.1f}" y="{best[3] - 2:.1f}" font-size="{font}" '
                f'font-family="{_FONT}" fill="{"#222" if colour else _DEAD}">'
                f"{html.escape(labels[i])}</text>")
        item = f"<title>{html.escape(titles[i])}</title>{circle}{text}"
        link = links[i]
        parts.append(f'<a href="{html.escape(link)}">{item}</a>' if link else f"<g>{item}</g>")
    return (f'<svg class="map" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{html.escape(caption)}">'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fcfcfc" '
            f'stroke="#ddd"/>{"".join(parts)}</svg>')
