"""Per neuron, the validation inputs that activate it most, kept as thumbnails while streaming.

:class:`TopActivatingInputs` feeds the projector's sprite (see
:mod:`lightning_semvec.projector.sprites`): the callback shows each neuron's best inputs as its
point's image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector.sprites import to_thumbnails

__all__ = ["TopActivatingInputs"]


class TopActivatingInputs(Metric):
    """Per neuron, the ``k`` inputs with the largest activation, as thumbnails, streamed.

    ``update(activations, images)`` merges a batch into the running top ``k`` of every neuron
    (activation values and ``(3, size, size)`` uint8 thumbnails, see
    :func:`~lightning_semvec.projector.to_thumbnails`). Under DDP each process keeps its own
    top ``k``; ``compute`` gathers every process's candidates (an ``all_gather``, so every
    process must call it) and keeps the best ``k``.

    Args:
        num_neurons: ``N``, columns of the activations.
        k: inputs kept per neuron.
        size: side of each thumbnail in pixels (see
            :func:`~lightning_semvec.projector.sprite_thumbnail_size`).
        kwargs: passed to :class:`torchmetrics.Metric`.

    States:
        ``values`` ``(N, k)`` float32 (``-inf`` where no input was seen yet) and
        ``thumbnails`` ``(N, k, 3, size, size)`` uint8, gathered, not summed, across processes.

    Example:
        >>> top = TopActivatingInputs(num_neurons=2, k=1, size=4)
        >>> images = torch.zeros(3, 1, 8, 8)
        >>> images[:, :, :, 4:] = 1.0  # three images, each dark on the left, bright on the right
        >>> top.update(torch.tensor([[0.0, 5.0], [9.0, 1.0], [3.0, 2.0]]), images)
        >>> out = top.compute()
        >>> out["values"].tolist(), out["thumbnails"].shape
        ([[9.0], [5.0]], torch.Size([2, 1, 3, 4, 4]))
        >>> out["thumbnails"][0, 0, 0, 0].tolist()  # one row of a thumbnail
        [0, 0, 255, 255]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    values: Tensor
    thumbnails: Tensor

    def __init__(self, num_neurons: int, k: int = 1, size: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_neurons = check_int("num_neurons", num_neurons, 1)
        self.k = check_int("k", k, 1)
        self.size = check_int("size", size, 1)
        self.add_state(
            "values", torch.full((num_neurons, k), float("-inf")), dist_reduce_fx=None
        )
        self.add_state(
            "thumbnails",
            torch.zeros(num_neurons, k, 3, size, size, dtype=torch.uint8),
            dist_reduce_fx=None,
        )

    def update(self, activations: Tensor, images: Tensor) -> None:
        """Merge ``(B, N)`` per-input activations and their images.

        Args:
            activations: ``(B, N)``, one row per input (NaN and Inf never win).
            images: ``(B, C, H, W)`` inputs with ``C`` in ``{1, 3}``, or ``(B, 3, size, size)``
                uint8 thumbnails already made by
                :func:`~lightning_semvec.projector.to_thumbnails` (so that several layers can
                share them).
        """
        if activations.ndim != 2 or activations.shape[1] != self.num_neurons:
            raise SemvecValueError(
                f"activations must be (B, {self.num_neurons}), got {tuple(activations.shape)}."
            )
        if images.shape[0] != activations.shape[0]:
            raise SemvecValueError(
                f"Got {images.shape[0]} images for {activations.shape[0]} rows of activations."
            )
        if activations.shape[0] == 0:
            return
        ready = images.dtype == torch.uint8 and images.shape[1:] == (3, self.size, self.size)
        thumbs = images if ready else to_thumbnails(images, self.size)
        thumbs = thumbs.to(self.thumbnails.device)
        batch = activations.detach().to(self.values.device, torch.float32).T  # (N, B)
        batch = torch.where(torch.isfinite(batch), batch, torch.full_like(batch, float("-inf")))
        self.values, self.thumbnails = _merge_top(
            self.values, self.thumbnails, batch, thumbs.unsqueeze(0), self.k
        )

    def compute(self) -> dict[str, Tensor]:
        """``{"values": (N, k), "thumbnails": (N, k, 3, size, size)}``, best first.

        Places that never saw an input hold ``-inf`` and black thumbnails.
        """
        values, thumbs = self.values, self.thumbnails
        if values.ndim == 3:  # gathered: (world, N, k) -> (N, world * k), then the best k
            world = values.shape[0]
            values = values.permute(1, 0, 2).reshape(self.num_neurons, world * self.k)
            thumbs = thumbs.permute(1, 0, 2, 3, 4, 5).reshape(
                self.num_neurons, world * self.k, *thumbs.shape[3:]
            )
            empty_v = values[:, :0]
            empty_t = thumbs[:, :0]
            values, thumbs = _merge_top(empty_v, empty_t, values, thumbs, self.k)
        return {"values": values, "thumbnails": thumbs}


def _merge_top(
    values: Tensor, thumbs: Tensor, new_values: Tensor, new_thumbs: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Best ``k`` of ``values`` ``(N, a)`` and ``new_values`` ``(N, b)`` with their thumbnails.

    ``thumbs`` is ``(N, a, ...)``; ``new_thumbs`` is ``(N, b, ...)`` or ``(1, b, ...)`` when
    the new candidates are the same inputs for every neuron (a batch).
    """
    num, kept = values.shape
    top_values, index = torch.cat([values, new_values], dim=1).topk(k, dim=1)
    from_old = index < kept
    tail = (1,) * (thumbs.ndim - 2)
    if kept > 0:
        old_index = index.clamp(max=kept - 1).view(num, k, *tail).expand(-1, -1, *thumbs.shape[2:])
        old = thumbs.gather(1, old_index)
    else:
        old = None
    new_index = (index - kept).clamp(min=0)
    if new_thumbs.shape[0] == 1:
        new = new_thumbs[0][new_index]
    else:
        new_index = new_index.view(num, k, *tail).expand(-1, -1, *new_thumbs.shape[2:])
        new = new_thumbs.gather(1, new_index)
    if old is None:
        return top_values, new
    return top_values, torch.where(from_old.view(num, k, *tail), old, new)
