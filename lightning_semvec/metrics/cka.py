"""Linear CKA between layers, from the unbiased HSIC of minibatches, streamed over processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.cka import (
    MIN_UNBIASED_SAMPLES,
    check_activations,
    check_same_samples,
    cka_from_hsic,
    pairwise_unbiased_hsic,
)


class LinearCKA(Metric):
    """Streams the linear CKA between the layers of one model, or of two models.

    The minibatch CKA of Nguyen, Raghu & Kornblith (2021): ``update`` takes one minibatch of
    every layer's activations and adds the unbiased ``HSIC_1`` (Song et al., 2012) of the
    linear Grams of every pair of layers; ``compute`` returns::

        CKA[i, j] = mean HSIC(K_i, L_j) / sqrt(mean HSIC(K_i, K_i) * mean HSIC(L_j, L_j))

    over all minibatches seen (every batch, every process), built with
    :func:`~lightning_semvec.functional.cka.cka_from_hsic`.

    Within one model (``num_layers_b=None``) the result is the symmetric ``(A, A)`` matrix
    between the layers of ``activations_a``, with ones on the diagonal; with ``num_layers_b``
    it is the ``(A, B)`` matrix between the layers of ``activations_a`` and those of
    ``activations_b`` (two models fed the same samples).

    Unlike :class:`~lightning_semvec.metrics.ActivationSimilarity`, which equals its function
    on the concatenated data, this estimate depends on the batch size: each minibatch's HSIC
    is unbiased, so the result converges to the population CKA as batches grow, not to the
    biased full-batch :func:`~lightning_semvec.functional.cka.linear_cka`. Use batches of 32
    samples or more, and the same batch size when comparing results.

    Args:
        num_layers_a: ``A``, the number of layers in ``activations_a`` (at least 2 within one
            model, 1 or more with ``num_layers_b``).
        num_layers_b: ``B >= 1``, the number of layers in ``activations_b``; ``None`` (default)
            compares the layers of ``activations_a`` with each other.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).

    States (all float64 but the counters, all summed across processes):
        ``hsic_ab`` (A, B) (``(A, A)`` within one model), ``hsic_aa_diag`` (A,),
        ``hsic_bb_diag`` (B,) (equal to ``hsic_aa_diag`` within one model), sums of minibatch
        ``HSIC_1``; ``num_batches`` () and ``num_skipped`` () int64, the minibatches used and
        those skipped for having fewer than 4 samples.

    Note:
        A minibatch of fewer than 4 samples (the unbiased HSIC divides by ``m (m - 3)``), as
        the last one of an epoch may be, is skipped and counted in ``num_skipped``.

        A layer that is constant over the samples of every minibatch has no CKA: its row (and
        column) is NaN. On small batches the estimate may fall slightly outside ``[0, 1]``.

        Under DDP, :meth:`compute` gathers the states (torchmetrics' ``sync_on_compute``), so
        every process must call it; each gets the same matrix, equal to that of one process
        fed all the minibatches. Memory per update: ``(A + B) m^2`` float64 numbers.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(256, 8, generator=g)
        >>> layers = [x, torch.relu(x @ torch.randn(8, 16, generator=g)), torch.randn(256, 4, generator=g)]
        >>> metric = LinearCKA(num_layers_a=3)
        >>> for start in range(0, 256, 64):
        ...     metric.update([layer[start:start + 64] for layer in layers])
        >>> cka = metric.compute()
        >>> cka.shape, cka.dtype
        (torch.Size([3, 3]), torch.float64)
        >>> [round(v, 6) for v in cka.diagonal().tolist()]
        [1.0, 1.0, 1.0]
        >>> bool(cka[0, 1] > 0.5), bool(cka[0, 2].abs() < 0.1)  # related layers vs unrelated noise
        (True, True)
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    hsic_ab: Tensor
    hsic_aa_diag: Tensor
    hsic_bb_diag: Tensor
    num_batches: Tensor
    num_skipped: Tensor

    def __init__(self, num_layers_a: int, num_layers_b: int | None = None, **kwargs: Any) -> None:
        if num_layers_b is None:
            check_int("num_layers_a", num_layers_a, 2, hint="(within one model CKA compares layers with each "
                      "other; to compare two models, pass num_layers_b)")
        else:
            check_int("num_layers_a", num_layers_a, 1)
            check_int("num_layers_b", num_layers_b, 1)
        super().__init__(**kwargs)
        self.num_layers_a = num_layers_a
        self.num_layers_b = num_layers_b
        columns = num_layers_a if num_layers_b is None else num_layers_b
        f64 = torch.float64
        self.add_state("hsic_ab", torch.zeros(num_layers_a, columns, dtype=f64), dist_reduce_fx="sum")
        self.add_state("hsic_aa_diag", torch.zeros(num_layers_a, dtype=f64), dist_reduce_fx="sum")
        self.add_state("hsic_bb_diag", torch.zeros(columns, dtype=f64), dist_reduce_fx="sum")
        self.add_state("num_batches", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_skipped", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    @property
    def within_model(self) -> bool:
        """Whether the layers of one model are compared with each other (``num_layers_b=None``)."""
        return self.num_layers_b is None

    def _checked_layers(self, activations_a: Any, activations_b: Any) -> tuple[list[Tensor], list[str]]:
        """All layers' activations (A's then B's) and their names, every check passed."""
        expected = [("activations_a", activations_a, self.num_layers_a)]
        if self.num_layers_b is None:
            if activations_b is not None:
                raise SemvecValueError(
                    "activations_b was given but the metric compares the layers of one model: build it "
                    "with num_layers_b to compare two models."
                )
        else:
            if activations_b is None:
                raise SemvecValueError(
                    f"activations_b is missing: the metric compares two models, pass the {self.num_layers_b} "
                    "layers of the second one."
                )
            expected.append(("activations_b", activations_b, self.num_layers_b))
        layers: list[Tensor] = []
        names: list[str] = []
        for argument, value, count in expected:
            if isinstance(value, Tensor) or not isinstance(value, Sequence):
                raise SemvecValueError(
                    f"{argument} must be a list of (samples, features) tensors, one per layer, got "
                    f"{type(value).__name__}."
                )
            if len(value) != count:
                raise SemvecValueError(
                    f"{argument} has {len(value)} layers, the metric was built for {count}."
                )
            for i, tensor in enumerate(value):
                names.append(f"{argument}[{i}]")
                layers.append(check_activations(names[-1], tensor))
        check_same_samples(names, layers, 0)
        return layers, names

    def update(self, activations_a: Sequence[Tensor], activations_b: Sequence[Tensor] | None = None) -> None:
        """Add one minibatch: the ``(m, N_i)`` activations of the same ``m`` samples in every layer.

        Args:
            activations_a: ``num_layers_a`` floating-point tensors, one per layer of model A.
            activations_b: ``num_layers_b`` tensors of model B, when the metric compares two
                models; else ``None``.

        Everything is checked before any state changes: a bad minibatch raises a one-line
        :class:`~lightning_semvec.errors.SemvecValueError` and adds nothing. One of fewer than
        4 samples is skipped (counted in ``num_skipped``).
        """
        layers, _ = self._checked_layers(activations_a, activations_b)
        if layers[0].shape[0] < MIN_UNBIASED_SAMPLES:
            self.num_skipped += 1
            return
        with torch.no_grad():
            hsic = pairwise_unbiased_hsic(layers)
        hsic = hsic.to(device=self.hsic_ab.device, dtype=self.hsic_ab.dtype)
        diagonal = hsic.diagonal()
        a = self.num_layers_a
        if self.within_model:
            self.hsic_ab += hsic
            self.hsic_aa_diag += diagonal
            self.hsic_bb_diag += diagonal
        else:
            self.hsic_ab += hsic[:a, a:]
            self.hsic_aa_diag += diagonal[:a]
            self.hsic_bb_diag += diagonal[a:]
        self.num_batches += 1

    def compute(self) -> Tensor:
        """The CKA matrix over all minibatches seen.

        Returns:
            ``(A, B)`` (or ``(A, A)`` within one model) float64 tensor, NaN in the row or
            column of a constant layer. With ``A = B = 1`` torchmetrics returns it as a 0-d
            tensor (it squeezes one-element results).

        Raises:
            SemvecValueError: if no minibatch of at least 4 samples was seen.
        """
        if int(self.num_batches) == 0:
            raise SemvecValueError(
                f"LinearCKA saw no minibatch of at least {MIN_UNBIASED_SAMPLES} samples "
                f"({int(self.num_skipped)} smaller ones skipped): call update with larger batches "
                "(32 samples or more) before compute."
            )
        return cka_from_hsic(self.hsic_ab, self.hsic_aa_diag, self.hsic_bb_diag)
