"""The figures of a joint knowledge: the CKA between two models' layers, and both models'
neurons in one PCA map.

Matplotlib figures on an Agg canvas, never through ``pyplot`` (as
:mod:`lightning_semvec.analysis.figures`, whose :func:`~lightning_semvec.analysis.figures.pca_2d`
the map uses), and :func:`png_bytes` to encode one: the report puts them inline, the projector
folder in a TensorBoard event file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lightning_semvec.analysis.figures import pca_2d
from lightning_semvec.errors import SemvecValueError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["cka_heatmap", "joint_pca_map", "png_bytes", "shortened"]

#: The longest tick label; longer layer names keep their start and end.
MAX_LABEL = 32
#: Most matched pairs joined by a line in the PCA map (more would hide the points).
MAX_JOINED_PAIRS = 200
_MODEL_STYLES = (("tab:blue", "o"), ("tab:orange", "^"))


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def shortened(label: str, limit: int = MAX_LABEL) -> str:
    """``label`` with its middle cut to ``"…"`` when longer than ``limit`` characters.

    Example:
        >>> shortened("net.features.block3.conv2", 12)
        'net.f….conv2'
    """
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return label[:head] + "…" + label[len(label) - (limit - 1 - head):]


def cka_heatmap(
    cka: Tensor, rows: Sequence[str], columns: Sequence[str], *, row_title: str,
    column_title: str, title: str,
) -> Figure:
    """The CKA between two sets of layers, each cell coloured on a fixed 0-to-1 scale and
    holding its value (``n/a`` where a layer was constant).

    Args:
        cka: ``(A, B)`` CKA, rows the layers ``rows`` (of model A), columns ``columns`` (of B).
        rows, columns: the layers' names (shortened to :data:`MAX_LABEL` characters).
        row_title, column_title: the axes' titles (the models' names).
        title: the figure's title.

    Example:
        >>> figure = cka_heatmap(torch.tensor([[0.9, 0.2], [0.3, 0.8]]), ["a1", "a2"], ["b1", "b2"],
        ...                      row_title="teacher", column_title="student", title="CKA")
        >>> [t.get_text() for t in figure.axes[0].texts]
        ['0.90', '0.20', '0.30', '0.80']
    """
    if cka.ndim != 2 or tuple(cka.shape) != (len(rows), len(columns)) or not len(rows) * len(columns):
        raise SemvecValueError(
            f"cka must be (rows, columns) = ({len(rows)}, {len(columns)}), got {tuple(cka.shape)}.")
    values = cka.detach().double().cpu().numpy()
    row_labels = [shortened(r) for r in rows]
    column_labels = [shortened(c) for c in columns]
    a, b = values.shape
    cells = max(a, b)
    cell, font = (0.8, 9) if cells <= 6 else (0.55, 7) if cells <= 12 else (0.36, 5)
    # Fixed margins sized from the labels (a layout engine would double the drawing time),
    # and at least 5 x 3 inches, so that the title fits and the figure reads at card size.
    left = 0.6 + 0.07 * max(len(label) for label in row_labels)
    bottom = 0.7 + 0.05 * max(len(label) for label in column_labels)
    width = max(5.0, left + cell * b + 1.4)
    height = max(3.0, bottom + cell * a + 0.6)
    figure = _figure(width, height)
    ax = figure.subplots()
    figure.subplots_adjust(left=left / width, right=1 - 1.4 / width, bottom=bottom / height,
                           top=1 - 0.6 / height)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0,
                      aspect="auto")
    ax.set_facecolor("0.85")  # the NaN cells
    for i in range(a):
        for j in range(b):
            value = float(values[i, j])
            known = not math.isnan(value)
            ax.text(j, i, f"{value:.2f}" if known else "n/a", ha="center", va="center",
                    fontsize=font, color="white" if known and value < 0.55 else "black")
    ax.set_xticks(range(b), column_labels, rotation=35, ha="right", fontsize=font)
    ax.set_yticks(range(a), row_labels, fontsize=font)
    ax.set_xlabel(f"layers of {column_title}", fontsize=9)
    ax.set_ylabel(f"layers of {row_title}", fontsize=9)
    ax.set_title(title, fontsize=10)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    colorbar.ax.tick_params(labelsize=7)
    colorbar.set_label("linear CKA", fontsize=8)
    return figure


def joint_pca_map(
    vectors_a: Tensor, vectors_b: Tensor, names: tuple[str, str],
    pairs: Sequence[tuple[int, int]] = (), *, title: str,
) -> Figure | None:
    """Both models' neurons on the first two principal axes of their vectors together, one
    colour and marker per model, ``pairs`` (neuron of A, neuron of B) joined by a line (the
    first :data:`MAX_JOINED_PAIRS`). Dead neurons (zero vectors) are left out; ``None`` when
    fewer than two neurons are alive.

    Args:
        vectors_a: ``(N_A, d)`` vectors of model A, in the joint space.
        vectors_b: ``(N_B, d)`` vectors of model B.
        names: the two models' names, for the legend.
        pairs: matched pairs to join, as indices into ``vectors_a`` and ``vectors_b``.
        title: the figure's title.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> figure = joint_pca_map(torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g),
        ...                        ("teacher", "student"), [(0, 1)], title="joint")
        >>> [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
        ['teacher (6 neurons)', 'student (4 neurons)', 'mutual match (1)']
    """
    if vectors_a.ndim != 2 or vectors_b.ndim != 2 or vectors_a.shape[1] != vectors_b.shape[1]:
        raise SemvecValueError(
            f"vectors_a and vectors_b must be (N, d) of one d, got {tuple(vectors_a.shape)} and "
            f"{tuple(vectors_b.shape)}.")
    vectors = torch.cat([vectors_a, vectors_b]).detach().cpu().float()
    alive = vectors.norm(dim=1) > 0
    if int(alive.sum()) < 2:
        return None
    coords = torch.zeros(vectors.shape[0], 2)
    coords[alive] = pca_2d(vectors[alive])
    points = coords.numpy()
    n_a = vectors_a.shape[0]
    figure = _figure(6.4, 5.0)
    ax = figure.subplots()
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.1, top=0.92)
    joinable = [(i, j) for i, j in pairs if alive[i] and alive[n_a + j]]
    joined = joinable[:MAX_JOINED_PAIRS]
    if joined:
        from matplotlib.collections import LineCollection

        segments = [[points[i], points[n_a + j]] for i, j in joined]
        ax.add_collection(LineCollection(segments, colors="0.55", linewidths=0.6, alpha=0.6,
                                         label=f"mutual match ({len(joined)}"
                                         + (f" of {len(joinable)})" if len(joinable) > len(joined)
                                            else ")"), zorder=1))
    for (start, stop), name, (colour, marker) in zip(
            ((0, n_a), (n_a, vectors.shape[0])), names, _MODEL_STYLES):
        shown = alive.clone()
        shown[:start], shown[stop:] = False, False
        size = 26.0 if int(shown.sum()) <= 512 else 7.0
        ax.scatter(points[shown.numpy(), 0], points[shown.numpy(), 1], s=size, color=colour,
                   marker=marker, alpha=0.8, label=f"{name} ({int(shown.sum())} neurons)",
                   zorder=2)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda k: labels[k].startswith("mutual"))
    ax.legend([handles[k] for k in order], [labels[k] for k in order], fontsize=7,
              loc="upper right", frameon=False)
    ax.set_title(title, fontsize=10)
    return figure


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
