"""Figures of a layer's semantic vectors, as matplotlib figures (Agg canvas, no pyplot state).

- :func:`similarity_heatmaps`: the semantic similarity beside the activation similarity, with
  the neurons ordered by hierarchical clustering so that groups show as blocks.
- :func:`pca_map`: the vectors projected on their first two principal components, coloured
  by each neuron's preferred class.

The figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``, so they work in any process (no display, no global figure list to leak) and
``SummaryWriter.add_figure`` or ``figure.savefig`` can render them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import normalize_vectors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["cluster_order", "pca_2d", "pca_map", "similarity_heatmaps"]


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of a layout engine: constrained layout doubles the drawing time.
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


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
    the semantic similarity) and colour scale ``[-1, 1]``, so similar blocks line up.

    Args:
        semantic: ``(n, n)`` semantic similarity ``S_sem``.
        activation: optional ``(n, n)`` activation similarity ``S_act`` of the same neurons.
        order: optional ``(n,)`` permutation to show the neurons in.
        neuron_ids: optional ``(n,)`` original indices of the neurons (tick labels when
            ``n <= 40``).
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
    width = 4.4 * len(panels) + 1.0
    figure = _new_figure(width, 4.6)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    figure.subplots_adjust(left=0.6 / width, right=1.0 - 1.0 / width, bottom=0.14, top=0.86,
                           wspace=0.25)
    image = None
    for ax, (name, matrix) in zip(axes, panels):
        shown = matrix.detach().cpu().float()[order][:, order].numpy()
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"{name} ({n} neurons)", fontsize=10)
        if n <= 40:
            labels = [str(int(i)) for i in ids[order].tolist()]
            ax.set_xticks(range(n), labels, fontsize=6, rotation=90)
            ax.set_yticks(range(n), labels, fontsize=6)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel("neurons, clustered")
    assert image is not None  # at least one panel
    figure.colorbar(image, cax=figure.add_axes((1.0 - 0.8 / width, 0.2, 0.15 / width, 0.6)))
    if title:
        figure.suptitle(title)
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
    """A 2-D PCA map of a layer's semantic vectors, coloured by preferred class.

    Args:
        vectors: ``(N, d)`` semantic vectors.
        preferred_class: optional ``(N,)`` class index per neuron (negative: unknown, grey).
        class_names: optional names of the classes for the legend.
        dead: optional ``(N,)`` bool; dead neurons are drawn as grey crosses. With neither
            ``preferred_class`` nor ``dead`` (no statistics) the map has no legend.
        title: the figure's title.
        annotate: write each neuron's index beside its point (default: when ``N <= 64``).

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
    figure = _new_figure(6.4, 5.0)
    ax = figure.subplots()
    figure.subplots_adjust(left=0.12, right=0.76, bottom=0.11, top=0.92)
    dead_mask = np.zeros(n, dtype=bool) if dead is None else np.asarray(
        torch.as_tensor(dead).cpu().bool()
    )
    if dead_mask.shape != (n,):
        raise SemvecValueError(f"dead must have shape ({n},), got {dead_mask.shape}.")
    size = 28.0 if n <= 512 else 6.0
    if preferred_class is None:
        # "alive" only when there is a dead-neuron mask to tell alive from dead.
        ax.scatter(coords[~dead_mask][:, 0], coords[~dead_mask][:, 1], s=size, color="tab:blue",
                   label=None if dead is None else "alive")
    else:
        classes = np.asarray(torch.as_tensor(preferred_class).cpu().long())
        if classes.shape != (n,):
            raise SemvecValueError(f"preferred_class must have shape ({n},), got {classes.shape}.")
        from matplotlib import colormaps

        known = sorted(int(c) for c in np.unique(classes[~dead_mask]) if c >= 0)
        cmap = colormaps["tab10" if len(known) <= 10 else "tab20"]
        for position, c in enumerate(known):
            mask = (classes == c) & ~dead_mask
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(coords[mask][:, 0], coords[mask][:, 1], s=size, color=cmap(position % cmap.N), label=name)
        unknown = (classes < 0) & ~dead_mask
        if unknown.any():
            ax.scatter(coords[unknown][:, 0], coords[unknown][:, 1], s=size, color="0.6", label="unknown")
    if dead_mask.any():
        ax.scatter(coords[dead_mask][:, 0], coords[dead_mask][:, 1], s=size, color="0.4", marker="x", label="dead")
    if annotate or (annotate is None and n <= 64):
        for i, (x, y) in enumerate(coords):
            ax.annotate(str(i), (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    legend_title = "preferred class" if preferred_class is not None else None
    if preferred_class is not None or dead is not None:  # without statistics: nothing to name
        # Outside the axes: loc="best" would test every point for overlap, slow for wide layers.
        ax.legend(fontsize=7, title=legend_title, title_fontsize=7, loc="center left",
                  bbox_to_anchor=(1.02, 0.5), frameon=False)
    ax.set_title(title or f"semantic vectors, PCA ({n} neurons)", fontsize=10)
    return figure
