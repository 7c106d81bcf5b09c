"""Figures of a layer's semantic vectors, as matplotlib figures (Agg canvas, no pyplot state).

- :func:`similarity_heatmaps`: the semantic similarity beside the activation similarity, with
  the neurons ordered by hierarchical clustering so that groups show as blocks.
- :func:`pca_map`: the vectors projected on their first two principal components, coloured
  by each neuron's preferred class.

The figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``, so they work in any process (no display, no global figure list to leak) and
``SummaryWriter.add_figure`` or ``figure.savefig`` can render them.

They are drawn to be read where TensorBoard shows them: its image cards scale an image to the
card's width, about 350 to 500 pixels. So each figure is at most :data:`CARD_WIDTH_PX` pixels
wide at :data:`FIGURE_DPI` (the PCA map 500 x 420, the two heatmaps 580 x 340), its text is 10 to
12 points (9 to 16 pixels once scaled), and a heatmap labels at most :data:`MAX_TICK_LABELS`
neurons per axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import normalize_vectors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CARD_WIDTH_PX",
    "FIGURE_DPI",
    "MAX_LEGEND_CLASSES",
    "MAX_TICK_LABELS",
    "cluster_order",
    "pca_2d",
    "pca_map",
    "similarity_heatmaps",
]

#: Pixels per inch of every figure (also what ``add_figure`` renders at): sizes in pixels below.
FIGURE_DPI = 100
#: The widest figure, in pixels: TensorBoard's image cards are about 350 to 500 pixels wide.
CARD_WIDTH_PX = 600
#: At most this many neuron labels per heatmap axis (every k-th neuron beyond).
MAX_TICK_LABELS = 10
#: A PCA map lists at most this many classes in its legend; with more, each point is labelled
#: with its preferred class instead of its index.
MAX_LEGEND_CLASSES = 12
# Font sizes in points: title, axis labels, tick labels and legend (point labels one less).
_TITLE, _LABEL, _TICK = 12, 11, 10


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of a layout engine: constrained layout doubles the drawing time.
    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    return figure


def _tick_positions(n: int) -> list[int]:
    """At most :data:`MAX_TICK_LABELS` positions of ``range(n)``, evenly spaced.

    Example:
        >>> _tick_positions(5), _tick_positions(32)
        ([0, 1, 2, 3, 4], [0, 3, 7, 10, 14, 17, 21, 24, 28, 31])
    """
    return evenly_spaced(n, MAX_TICK_LABELS).tolist()


def cluster_order(similarity: Tensor) -> Tensor:
    """Order of the neurons given by average-linkage clustering of a similarity matrix.

    The distance between two neurons is ``1 - similarity`` (clipped at 0, made symmetric);
    the order is the leaves of the dendrogram (``scipy.cluster.hierarchy.leaves_list``), so
    neurons of one cluster sit next to each other.

    Args:
        similarity: ``(N, N)`` similarity, e.g. the semantic similarity.

    Returns:
        ``(N,)`` int64, a permutation of ``0..N-1``.

    Example:
        >>> s = torch.tensor([[1.0, 0.0, 0.9], [0.0, 1.0, 0.1], [0.9, 0.1, 1.0]])
        >>> cluster_order(s).tolist()  # neurons 0 and 2 belong together
        [1, 0, 2]
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise SemvecValueError(f"similarity must be (N, N), got {tuple(similarity.shape)}.")
    n = similarity.shape[0]
    if n < 3:
        return torch.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    s = similarity.detach().cpu().double()
    s = torch.nan_to_num((s + s.T) / 2.0, nan=0.0)
    distance = (1.0 - s).clamp_min(0.0).numpy()
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return torch.from_numpy(leaves_list(tree).astype(np.int64))


def similarity_heatmaps(
    semantic: Tensor,
    activation: Tensor | None = None,
    *,
    order: Tensor | None = None,
    neuron_ids: Sequence[int] | Tensor | None = None,
    title: str | None = None,
) -> Figure:
    """Heatmaps of the semantic and (if given) activation similarity, side by side.

    Both matrices are shown with the same neuron order (by default :func:`cluster_order` of
    the semantic similarity) and colour scale ``[-1, 1]``, so similar blocks line up; the
    figure is 580 x 340 pixels with two panels (340 x 340 with one), sized for TensorBoard's
    image cards.

    Args:
        semantic: ``(n, n)`` semantic similarity ``S_sem``.
        activation: optional ``(n, n)`` activation similarity ``S_act`` of the same neurons.
        order: optional ``(n,)`` permutation to show the neurons in.
        neuron_ids: optional ``(n,)`` original indices of the neurons: the tick labels, at
            most :data:`MAX_TICK_LABELS` per axis.
        title: the figure's title.

    Returns:
        A :class:`matplotlib.figure.Figure` (Agg canvas).

    Example:
        >>> from lightning_semvec.functional import semantic_similarity
        >>> vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> s_sem = semantic_similarity(vectors)
        >>> figure = similarity_heatmaps(s_sem, s_sem, title="fc")
        >>> len(figure.axes)  # two heatmaps and a colour bar
        3
    """
    if semantic.ndim != 2 or semantic.shape[0] != semantic.shape[1]:
        raise SemvecValueError(f"semantic must be (n, n), got {tuple(semantic.shape)}.")
    if activation is not None and activation.shape != semantic.shape:
        raise SemvecValueError(
            f"activation must have the shape of semantic {tuple(semantic.shape)}, got "
            f"{tuple(activation.shape)}."
        )
    n = semantic.shape[0]
    order = cluster_order(semantic) if order is None else torch.as_tensor(order).long().cpu()
    ids = torch.arange(n) if neuron_ids is None else torch.as_tensor(neuron_ids).long().cpu()
    panels = [("semantic similarity", semantic)]
    if activation is not None:
        panels.append(("activation similarity", activation))
    # 580 x 340 pixels for two panels, 340 x 340 for one: about 230 pixels a heatmap.
    width = 2.4 * len(panels) + 1.0
    figure = _new_figure(width, 3.4)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    figure.subplots_adjust(left=0.5 / width, right=1.0 - 0.75 / width, bottom=0.2, top=0.8,
                           wspace=0.18)
    ticks = _tick_positions(n)
    labels = [str(int(i)) for i in ids[order][ticks].tolist()]
    image = None
    for ax, (name, matrix) in zip(axes, panels):
        shown = matrix.detach().cpu().float()[order][:, order].numpy()
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name, fontsize=_LABEL)
        ax.set_xticks(ticks, labels, fontsize=_TICK, rotation=90)
        ax.set_yticks(ticks, labels if ax is axes[0] else [], fontsize=_TICK)
        ax.set_xlabel(f"{n} neurons, clustered", fontsize=_TICK)
    assert image is not None  # at least one panel
    bar = figure.colorbar(image, cax=figure.add_axes((1.0 - 0.6 / width, 0.2, 0.12 / width, 0.6)))
    bar.set_ticks([-1.0, 0.0, 1.0])
    bar.ax.tick_params(labelsize=_TICK)
    if title:
        figure.suptitle(title, fontsize=_TITLE)
    return figure


def pca_2d(vectors: Tensor) -> Tensor:
    """The rows of ``(N, d)`` vectors, unit-normalised, on their first two principal axes.

    Normalised first because only the directions of semantic vectors carry meaning (their
    similarity is a cosine). An exact SVD of the ``(N, d)`` matrix: no random projection, no
    touch on the global random state. With ``d == 1`` the second coordinate is 0.

    Returns:
        ``(N, 2)`` float32.

    Example:
        >>> pca_2d(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])).shape
        torch.Size([3, 2])
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise SemvecValueError(f"vectors must be (N, d) with N >= 1, got {tuple(vectors.shape)}.")
    x = normalize_vectors(vectors.detach().cpu()).double()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    coords = x @ vh[:2].T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 2 - coords.shape[1])], 1)
    return coords.float()


def pca_map(
    vectors: Tensor,
    preferred_class: Tensor | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    dead: Tensor | Sequence[bool] | None = None,
    *,
    title: str | None = None,
    annotate: bool | None = None,
) -> Figure:
    """A 2-D PCA map of a layer's semantic vectors, coloured by preferred class (500 x 420
    pixels, for TensorBoard's image cards).

    Args:
        vectors: ``(N, d)`` semantic vectors.
        preferred_class: optional ``(N,)`` class index per neuron (negative: unknown, grey).
        class_names: optional names of the classes for the legend.
        dead: optional ``(N,)`` bool; dead neurons are drawn as grey crosses. With neither
            ``preferred_class`` nor ``dead`` (no statistics) the map has no legend.
        title: the figure's title.
        annotate: write each alive neuron's index beside its point (its preferred class when
            there are more than :data:`MAX_LEGEND_CLASSES` classes, which get no legend);
            default: when ``N <= 64``.

    Returns:
        A :class:`matplotlib.figure.Figure` (Agg canvas).

    Example:
        >>> figure = pca_map(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)),
        ...                  preferred_class=torch.arange(12) % 3, class_names=["a", "b", "c"])
        >>> figure.axes[0].get_xlabel()
        'PC 1'
    """
    coords = pca_2d(vectors).numpy()
    n = coords.shape[0]
    figure = _new_figure(5.0, 4.2)  # 500 x 420 pixels
    ax = figure.subplots()
    figure.subplots_adjust(left=0.13, right=0.74, bottom=0.13, top=0.9)
    dead_mask = np.zeros(n, dtype=bool) if dead is None else np.asarray(
        torch.as_tensor(dead).cpu().bool()
    )
    if dead_mask.shape != (n,):
        raise SemvecValueError(f"dead must have shape ({n},), got {dead_mask.shape}.")
    size = 60.0 if n <= 64 else (24.0 if n <= 512 else 6.0)
    names: list[str] = [str(i) for i in range(n)]  # what a point's label says
    legend = True
    if preferred_class is None:
        # "alive" only when there is a dead-neuron mask to tell alive from dead.
        ax.scatter(coords[~dead_mask][:, 0], coords[~dead_mask][:, 1], s=size, color="tab:blue",
                   label=None if dead is None else "alive")
    else:
        classes = np.asarray(torch.as_tensor(preferred_class).cpu().long())
        if classes.shape != (n,):
            raise SemvecValueError(f"preferred_class must have shape ({n},), got {classes.shape}.")
        from matplotlib import colormaps

        def class_name(c: int) -> str:
            return class_names[c] if class_names is not None and c < len(class_names) else str(c)

        known = sorted(int(c) for c in np.unique(classes[~dead_mask]) if c >= 0)
        cmap = colormaps["tab10" if len(known) <= 10 else "tab20"]
        # More classes than a legend can list at a readable size: the points say their class.
        legend = len(known) <= MAX_LEGEND_CLASSES
        for position, c in enumerate(known):
            mask = (classes == c) & ~dead_mask
            ax.scatter(coords[mask][:, 0], coords[mask][:, 1], s=size,
                       color=cmap(position % cmap.N), label=class_name(c))
        unknown = (classes < 0) & ~dead_mask
        if unknown.any():
            ax.scatter(coords[unknown][:, 0], coords[unknown][:, 1], s=size, color="0.6", label="unknown")
        if not legend:
            names = [class_name(int(c)) if c >= 0 else str(i) for i, c in enumerate(classes)]
    if dead_mask.any():
        ax.scatter(coords[dead_mask][:, 0], coords[dead_mask][:, 1], s=size, color="0.4", marker="x", label="dead")
    if annotate or (annotate is None and n <= 64):
        # Dead neurons go unlabelled: their crosses say all there is, and their labels would
        # crowd those of the neurons that do something.
        for (x, y), text, is_dead in zip(coords, names, dead_mask):
            if not is_dead:
                ax.annotate(text, (x, y), fontsize=_TICK - 1, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xlabel("PC 1", fontsize=_LABEL)
    ax.set_ylabel("PC 2", fontsize=_LABEL)
    ax.tick_params(labelsize=_TICK - 1)
    ax.locator_params(nbins=4)
    legend_title = "preferred class" if preferred_class is not None else None
    if legend and (preferred_class is not None or dead is not None):  # without statistics: nothing to name
        # Outside the axes: loc="best" would test every point for overlap, slow for wide layers.
        ax.legend(fontsize=_TICK, title=legend_title, title_fontsize=_TICK, loc="center left",
                  bbox_to_anchor=(1.02, 0.5), frameon=False, handletextpad=0.2,
                  borderaxespad=0.0)
    ax.set_title(title or f"semantic vectors, PCA ({n} neurons)", fontsize=_TITLE)
    return figure
