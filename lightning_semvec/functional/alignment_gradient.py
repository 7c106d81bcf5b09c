"""Closed-form gradients of the alignment loss, for several layers at once, without autograd.

The callback minimises, for every hooked layer, ``L = mean over alive pairs (i, j) of
(S_sem[i, j] - S_act[i, j])**2`` (see :mod:`lightning_semvec.functional.alignment`). Through
autograd that is some sixty small operations per layer and step, which on a small CNN cost more
than the network's own step. The gradient has a short closed form. With ``Z`` the standardised
activations, ``U`` the row-normalised vectors with dead rows zeroed, ``c`` the number of alive
ordered pairs and ``D = U U.T - Z.T Z``:

- dense: ``dL/dU = (4 / c) D U``;
- factorised, the same without any ``N x N`` matrix: ``dL/dU = (4 / c) (U (U.T U) - Z.T (Z U))``;
- through the row normalisation ``U = E / ||E||``:
  ``dL/dE = (dL/dU - U * rowsum(U * dL/dU)) / ||E||``.

Dense layers laid side by side in one activation matrix share one computation with a
block-diagonal mask, so the six layers of a small CNN cost one set of operations, not six.
Nothing here syncs with the host.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.alignment import (
    choose_alignment_form,
    gram_frobenius_sq,
)
from lightning_semvec.functional.similarity import SimilarityKind, standardize_columns

#: Row norms below this are clamped, as :func:`torch.nn.functional.normalize` does.
NORM_EPS = 1e-12
#: Dense layers are packed into one block-diagonal computation up to this many neurons in
#: all: the off-block work it wastes stays small next to the per-operation cost it saves.
FUSED_MAX_NEURONS = 2048


class AlignmentGradients(NamedTuple):
    """What one call of :func:`alignment_gradients` returns, for ``L`` layers.

    Attributes:
        gradients: ``L`` tensors ``(N_l, d)``, float32: the gradient of each layer's loss with
            respect to its (unnormalised) vectors; all zeros for a layer that is not ``ok``.
        losses: ``(L,)`` float32 loss values (NaN for a layer with a non-finite activation),
            or ``None`` when not asked for.
        ok: ``(L,)`` bool: the layer's activations are all finite and at least two of its
            neurons are alive, so its step is meaningful.
    """

    gradients: list[Tensor]
    losses: Tensor | None
    ok: Tensor


def alignment_gradients(
    activations: Tensor,
    vectors: Sequence[Tensor],
    kind: SimilarityKind = "pearson",
    form: Literal["dense", "factorized"] = "dense",
    sample_weights: Tensor | None = None,
    with_loss: bool = True,
) -> AlignmentGradients:
    """Gradients of the alignment losses of several layers whose activations sit side by side.

    Equal, to float precision, to running ``alignment_loss(acts_l, vectors_l)`` for every layer
    and calling ``backward`` on each, at a fraction of the cost: no autograd graph, and for the
    dense form one set of operations for all layers together.

    Args:
        activations: ``(M, N_1 + ... + N_L)``: the layers' ``(M, N_l)`` activations
            concatenated along the neuron axis (any float dtype; work is done in float32).
        vectors: the layers' semantic vectors, ``(N_l, d)`` each, in the same order.
        kind: activation similarity, ``"pearson"`` (default) or ``"cosine"``.
        form: ``"dense"`` (one ``sum(N_l)`` squared matrix; for narrow layers) or
            ``"factorized"`` (never ``N x N``; for wide layers, one layer at a time).
        sample_weights: optional ``(M,)`` 0/1 weights marking padding rows.
        with_loss: also return the loss values (for the dense form nearly free; for the
            factorised form it adds the ``O(M**2 N)`` term that does not depend on the vectors).

    Returns:
        :class:`AlignmentGradients`.

    Example:
        >>> from lightning_semvec.functional import alignment_loss
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> acts = [torch.randn(32, 5), torch.randn(32, 7)]
        >>> vecs = [torch.randn(5, 3, requires_grad=True), torch.randn(7, 3, requires_grad=True)]
        >>> out = alignment_gradients(torch.cat(acts, dim=1), [v.detach() for v in vecs])
        >>> loss, _ = alignment_loss(acts[1], vecs[1])
        >>> loss.backward()
        >>> torch.allclose(out.gradients[1], vecs[1].grad, atol=1e-6), out.ok.tolist()
        (True, [True, True])
    """
    if form not in ("dense", "factorized"):
        raise SemvecValueError(f"Unknown form {form!r}: use 'dense' or 'factorized'.")
    sizes = [int(v.shape[0]) for v in vectors]
    if not sizes or activations.ndim != 2 or activations.shape[1] != sum(sizes):
        raise SemvecValueError(
            "activations must be (samples, total neurons) with one column per row of the "
            f"vectors; got {tuple(activations.shape)} for layers of {sizes} neurons."
        )
    z, alive, column_finite = standardize_columns(activations, kind, sample_weights)
    z = z.nan_to_num_(0.0, 0.0, 0.0)  # a non-finite column's layer is flagged, not propagated
    # One cast per non-float32 layer and one detach in all: each op costs microseconds here.
    as_float = [v if v.dtype == torch.float32 else v.float() for v in vectors]
    all_vectors = (torch.cat(as_float) if len(as_float) > 1 else as_float[0]).detach()
    norms = torch.linalg.vector_norm(all_vectors, dim=1, keepdim=True).clamp_min(NORM_EPS)
    unit = all_vectors / norms
    alive_f = alive.to(torch.float32)
    masked = unit * alive_f.unsqueeze(1)
    layer_of, membership, cross_layer = _layout(tuple(sizes), z.device)
    counts = membership @ torch.stack([alive_f, (~column_finite).to(torch.float32)], dim=1)
    num_alive, finite = counts[:, 0], counts[:, 1] == 0
    ok = finite & (num_alive >= 2)
    pairs = (num_alive * (num_alive - 1.0)).clamp_min(1.0)
    scale = torch.where(ok, 4.0 / pairs, torch.zeros_like(pairs))
    if form == "dense":
        grad_unit, losses = _dense(z, masked, membership, cross_layer, with_loss)
    else:
        grad_unit, losses = _factorized(z, masked, sizes, with_loss)
    grad_unit = grad_unit * scale[layer_of].unsqueeze(1)
    radial = (unit * grad_unit).sum(dim=1, keepdim=True)
    gradients = ((grad_unit - unit * radial) / norms).split(sizes)
    if losses is not None:
        losses = torch.where(finite, losses / pairs, torch.full_like(losses, float("nan")))
    return AlignmentGradients(list(gradients), losses, ok)


def plan_alignment_runs(
    num_samples: int, sizes: Sequence[int], dim: int, form: str = "auto"
) -> list[tuple[Literal["dense", "factorized"], list[int]]]:
    """Which layers share one :func:`alignment_gradients` call, and in which form.

    Each layer's form is ``form``, or for ``"auto"`` the cheaper one by
    :func:`~lightning_semvec.functional.choose_alignment_form`. Consecutive dense layers are
    packed together while their total stays within :data:`FUSED_MAX_NEURONS`; factorised
    layers go one at a time.

    Example:
        >>> plan_alignment_runs(64, [16, 32, 10, 20000], dim=16)
        [('dense', [0, 1, 2]), ('factorized', [3])]
    """
    runs: list[tuple[Literal["dense", "factorized"], list[int]]] = []
    packed = FUSED_MAX_NEURONS + 1  # neurons in the open dense run; none open yet
    for i, size in enumerate(sizes):
        chosen = form if form != "auto" else choose_alignment_form(num_samples, size, dim)
        if chosen == "factorized":
            runs.append(("factorized", [i]))
        elif packed + size <= FUSED_MAX_NEURONS and runs and runs[-1][0] == "dense":
            runs[-1][1].append(i)
            packed += size
        else:
            runs.append(("dense", [i]))
            packed = size
    return runs


def split_alignment_runs(
    form: str, activations: Tensor, vectors: list[Tensor], dim: int
) -> list[tuple[Literal["dense", "factorized"], Tensor, list[int]]]:
    """``(form, activation columns, layer indices)`` of each :func:`alignment_gradients` call that
    :func:`plan_alignment_runs` plans for layers whose ``vectors`` sit side by side in
    ``activations`` (``(M, sum N_l)``); one run gets ``activations`` itself, not a copy."""
    sizes = [v.shape[0] for v in vectors]
    runs = plan_alignment_runs(activations.shape[0], sizes, dim, form)
    if len(runs) == 1:
        return [(runs[0][0], activations, runs[0][1])]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    pieces = [[activations[:, starts[i] : starts[i + 1]] for i in layers] for _, layers in runs]
    return [
        (kind, columns[0] if len(columns) == 1 else torch.cat(columns, dim=1), layers)
        for (kind, layers), columns in zip(runs, pieces)
    ]


@functools.lru_cache(maxsize=16)
def _layout(sizes: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """For layers of ``sizes`` side by side: each column's layer ``(T,)``, the ``(L, T)``
    0/1 membership matrix and the ``(T, T)`` mask of cross-layer pairs (``None`` for one layer).

    Cached: the same few layouts recur at every step. Nothing here is ever written to.
    """
    layer_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).to(device)
    membership = (torch.arange(len(sizes), device=device).unsqueeze(1) == layer_of).float()
    cross = layer_of.unsqueeze(1) != layer_of.unsqueeze(0) if len(sizes) > 1 else None
    return layer_of, membership, cross


def _dense(
    z: Tensor, masked: Tensor, membership: Tensor, cross_layer: Tensor | None, with_loss: bool
) -> tuple[Tensor, Tensor | None]:
    """``(D U, per-layer sum of D**2)`` with ``D`` the block-diagonal ``U U.T - Z.T Z``."""
    difference = torch.addmm(masked @ masked.T, z.T, z, alpha=-1.0)
    if cross_layer is not None:
        difference = difference.masked_fill_(cross_layer, 0.0)
    losses = membership @ difference.square().sum(dim=1) if with_loss else None
    return difference @ masked, losses


def _factorized(
    z: Tensor, masked: Tensor, sizes: list[int], with_loss: bool
) -> tuple[Tensor, Tensor | None]:
    """``(U (U.T U) - Z.T (Z U), per-layer ||Z.T Z - U U.T||_F**2)``, one layer at a time."""
    grads, losses, start = [], [], 0
    for size in sizes:
        z_l, u_l = z[:, start : start + size], masked[start : start + size]
        projected = z_l @ u_l  # (M, d)
        gram = u_l.T @ u_l  # (d, d)
        grads.append(torch.addmm(u_l @ gram, z_l.T, projected, alpha=-1.0))
        if with_loss:
            total = gram_frobenius_sq(z_l) - 2.0 * projected.square().sum() + gram.square().sum()
            losses.append(total.clamp_min(0.0))
        start += size
    grad = torch.cat(grads) if len(grads) > 1 else grads[0]
    return grad, (torch.stack(losses) if with_loss else None)
