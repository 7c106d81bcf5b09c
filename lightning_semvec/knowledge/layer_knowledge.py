"""One layer's knowledge: its neurons' semantic vectors, how the layer was read, and
optional per-neuron statistics of held-out data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_semvec._utils.checks import is_int
from lightning_semvec.capture.readout import REDUCTIONS
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.similarity import SIMILARITY_KINDS
from lightning_semvec.knowledge.header_checks import short

__all__ = [
    "MAX_NEURON_DIM",
    "NEURON_STATISTICS",
    "TOP_INPUTS_MAX_PIXELS",
    "LayerKnowledge",
    "neuron_dim_is_valid",
]

#: The largest ``|neuron_dim|``: far beyond the rank of any layer output, small enough that an
#: absurd value from a file (``10**30``) is refused instead of carried along.
MAX_NEURON_DIM = 64

#: The per-neuron statistics a knowledge file may carry, with their dtype and shape
#: (``"N"``: one value per neuron; ``"C"``: one per class; ``"CxN"``: class by neuron;
#: ``"NxKxChxSxS"``: per neuron ``K`` images of ``Ch`` channels, ``S`` pixels a side). All but
#: ``top_inputs`` are what :class:`~lightning_semvec.metrics.NeuronActivationStatistics`
#: computes on validation data; ``top_inputs`` are each neuron's top-activating inputs as
#: thumbnails (:class:`~lightning_semvec.metrics.TopActivatingInputs`), best first.
NEURON_STATISTICS: dict[str, tuple[torch.dtype, str]] = {
    "mean_activation": (torch.float32, "N"),
    "dead": (torch.bool, "N"),
    "class_counts": (torch.float32, "C"),
    "class_means": (torch.float32, "CxN"),
    "selectivity": (torch.float32, "N"),
    "preferred_class": (torch.int64, "N"),
    "top_inputs": (torch.uint8, "NxKxChxSxS"),
}

#: The most pixels ``N * K * S**2`` a layer's ``top_inputs`` may hold (3 MiB at 3 channels):
#: a 2048-channel layer keeps one 22-pixel thumbnail per neuron, the logits of 62 classes
#: nine of 32 pixels. The export shrinks the thumbnails to fit; a file above it is refused.
TOP_INPUTS_MAX_PIXELS = 2**20


@dataclass(frozen=True, eq=False)
class LayerKnowledge:
    """The semantic vectors of one layer's neurons and how that layer was read.

    Args:
        name: the layer's dotted module name in the teacher (e.g. ``"fc"``).
        vectors: ``(N, d)`` floating tensor, one row per neuron. It is stored as a detached,
            contiguous float32 copy on the CPU.
        similarity: the activation similarity the vectors were aligned to,
            ``"pearson"`` or ``"cosine"``.
        reduction: how the layer's output became samples, ``"mean"`` or ``"positions"``.
        neuron_dim: the axis of the layer's output that holds the neurons (``1`` or ``-1``;
            any non-zero int of at most :data:`MAX_NEURON_DIM` in size).
        statistics: optional per-neuron statistics of held-out data, any of
            :data:`NEURON_STATISTICS` (``"mean_activation"`` ``(N,)``, ``"dead"`` ``(N,)``
            bool, ``"class_means"`` ``(C, N)``, ``"class_counts"`` ``(C,)``,
            ``"selectivity"`` ``(N,)``, ``"preferred_class"`` ``(N,)`` int64,
            ``"top_inputs"`` ``(N, K, Ch, S, S)`` uint8 with ``Ch`` 1 or 3 and at most
            :data:`TOP_INPUTS_MAX_PIXELS` pixels ``N * K * S**2``). Stored as CPU copies in
            those dtypes (``top_inputs`` must already be uint8: pixels are not converted).
        learned: ``False`` marks vectors that learned nothing: every update of the layer was
            skipped (its output was constant, or it has one neuron), so they are their random
            start. The report and static distillation leave such a layer out.

    Raises:
        ValueError: on an empty name, a tensor that is not 2-D with at least one neuron and
            one dimension, non-finite vectors, an unknown similarity or reduction, or a
            statistic of unknown name or wrong shape.
        TypeError: on a non-tensor or non-floating ``vectors``, or a ``learned`` that is not
            a bool.

    Example:
        >>> import torch
        >>> layer = LayerKnowledge("fc", torch.ones(3, 2),
        ...                        statistics={"dead": torch.tensor([False, True, False])})
        >>> layer.num_neurons, layer.dim, sorted(layer.statistics)
        (3, 2, ['dead'])
    """

    name: str
    vectors: Tensor
    similarity: str = "pearson"
    reduction: str = "mean"
    neuron_dim: int = 1
    statistics: Mapping[str, Tensor] = field(default_factory=dict)
    learned: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SemvecValueError(f"A layer name must be a non-empty string, got {self.name!r}.")
        object.__setattr__(self, "vectors", checked_vectors(self.name, self.vectors))
        for option, value, choices in (
            ("similarity", self.similarity, SIMILARITY_KINDS),
            ("reduction", self.reduction, REDUCTIONS),
        ):
            if value not in choices:
                raise SemvecValueError(
                    f"Layer {self.name!r}: unknown {option} {value!r}; use one of {list(choices)}."
                )
        if not neuron_dim_is_valid(self.neuron_dim):
            raise SemvecValueError(
                f"Layer {self.name!r}: neuron_dim must be a non-zero int in "
                f"[-{MAX_NEURON_DIM}, {MAX_NEURON_DIM}] (1 for (B, C, ...) outputs, -1 for "
                f"(B, T, N)), got {short(self.neuron_dim)}."
            )
        statistics = checked_statistics(self.name, self.num_neurons, self.statistics)
        object.__setattr__(self, "statistics", statistics)
        if not isinstance(self.learned, bool):
            raise SemvecTypeError(
                f"Layer {self.name!r}: learned must be True or False, got {short(self.learned)}.")

    @property
    def num_neurons(self) -> int:
        """N, the number of neurons (rows of :attr:`vectors`)."""
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """d, the length of each semantic vector (columns of :attr:`vectors`)."""
        return int(self.vectors.shape[1])

    @property
    def num_classes(self) -> int | None:
        """C, the number of classes of the class statistics (``class_counts``,
        ``class_means``), or ``None`` when the layer has neither."""
        for key in ("class_counts", "class_means"):
            if key in self.statistics:
                return int(self.statistics[key].shape[0])
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerKnowledge):
            return NotImplemented
        return (
            self.name == other.name
            and self.similarity == other.similarity
            and self.reduction == other.reduction
            and self.neuron_dim == other.neuron_dim
            and self.learned == other.learned
            and bit_equal(self.vectors, other.vectors)
            and list(self.statistics) == list(other.statistics)
            and all(bit_equal(v, other.statistics[k]) for k, v in self.statistics.items())
        )

    __hash__ = None  # type: ignore[assignment]  # holds a mutable tensor

    def __repr__(self) -> str:
        stats = f", statistics={sorted(self.statistics)}" if self.statistics else ""
        stats += "" if self.learned else ", learned=False"
        return (
            f"LayerKnowledge(name={self.name!r}, vectors={self.num_neurons}x{self.dim}, "
            f"similarity={self.similarity!r}, reduction={self.reduction!r}, "
            f"neuron_dim={self.neuron_dim}{stats})"
        )


def neuron_dim_is_valid(neuron_dim: object) -> bool:
    """Whether ``neuron_dim`` is a non-zero int (not a bool) in
    ``[-MAX_NEURON_DIM, MAX_NEURON_DIM]``."""
    return is_int(neuron_dim) and 0 < abs(neuron_dim) <= MAX_NEURON_DIM


def bit_equal(a: Tensor, b: Tensor) -> bool:
    """Equal shapes, dtypes and bits (so NaN payloads and -0.0 count too)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == torch.float32:
        return bool(torch.equal(a.view(torch.int32), b.view(torch.int32)))
    return bool(torch.equal(a, b))


def checked_vectors(name: str, vectors: object) -> Tensor:
    """A float32 CPU contiguous copy of a layer's ``(N, d)`` vectors, or a clear error."""
    if not isinstance(vectors, Tensor):
        raise SemvecTypeError(
            f"The vectors of layer {name!r} must be a tensor, got {type(vectors).__name__}."
        )
    if not vectors.is_floating_point():
        raise SemvecTypeError(
            f"The vectors of layer {name!r} must be floating point, got {vectors.dtype}."
        )
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise SemvecValueError(
            f"The vectors of layer {name!r} must be (neurons, dim) with at least one of each, "
            f"got shape {tuple(vectors.shape)}."
        )
    copy = vectors.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    if not bool(torch.isfinite(copy).all()):
        raise SemvecValueError(
            f"The vectors of layer {name!r} hold NaN or Inf (after conversion to float32); "
            "the vector training diverged."
        )
    return copy


def checked_statistics(
    name: str, num_neurons: int, statistics: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    """CPU copies of a layer's statistics in their :data:`NEURON_STATISTICS` dtypes, in that
    order, each checked for its shape (``N`` neurons, one ``C`` for every class axis)."""
    if statistics is None:
        return {}
    if not isinstance(statistics, Mapping):
        raise SemvecTypeError(
            f"The statistics of layer {name!r} must map names to tensors, got "
            f"{type(statistics).__name__}."
        )
    unknown = [key for key in statistics if key not in NEURON_STATISTICS]
    if unknown:
        raise SemvecValueError(
            f"Layer {name!r} has unknown statistics {unknown}; known: {list(NEURON_STATISTICS)}."
        )
    num_classes: int | None = None
    checked: dict[str, Tensor] = {}
    for key, (dtype, axes) in NEURON_STATISTICS.items():
        value = statistics.get(key)
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise SemvecTypeError(
                f"Statistic {key!r} of layer {name!r} must be a tensor, got {type(value).__name__}."
            )
        if key == "top_inputs":
            checked[key] = checked_top_inputs(name, num_neurons, value)
            continue
        expected_ndim = 2 if axes == "CxN" else 1
        shape = tuple(value.shape)
        ok = value.ndim == expected_ndim
        if ok and axes in ("N", "CxN"):
            ok = shape[-1] == num_neurons
        if ok and axes in ("C", "CxN"):
            num_classes = shape[0] if num_classes is None else num_classes
            ok = shape[0] == num_classes
        if not ok or num_classes == 0:
            raise SemvecValueError(
                f"Statistic {key!r} of layer {name!r} has shape {shape}; expected "
                f"({axes.replace('x', ', ')}) with N={num_neurons} neurons"
                + (f" and C={num_classes} classes" if num_classes is not None else "")
                # Zero classes: statistics of unlabelled data, which hold nothing.
                + (" (at least one class)." if num_classes == 0 else ".")
            )
        checked[key] = value.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
    return checked


def checked_top_inputs(name: str, num_neurons: int, value: Tensor) -> Tensor:
    """A CPU contiguous copy of a layer's ``(N, K, Ch, S, S)`` uint8 ``top_inputs``, or a
    one-line error: another dtype (pixels are never converted), another shape (``Ch`` 1 or 3,
    square images, at least one image and one pixel) or more than
    :data:`TOP_INPUTS_MAX_PIXELS` pixels.

    Example:
        >>> checked_top_inputs("fc", 2, torch.zeros(2, 1, 3, 4, 4, dtype=torch.uint8)).shape
        torch.Size([2, 1, 3, 4, 4])
    """
    shape = tuple(value.shape)
    if value.dtype != torch.uint8:
        raise SemvecTypeError(
            f"Statistic 'top_inputs' of layer {name!r} has dtype {value.dtype}; expected "
            "torch.uint8 thumbnails (0..255)."
        )
    ok = (len(shape) == 5 and shape[0] == num_neurons and shape[1] >= 1 and shape[2] in (1, 3)
          and shape[3] == shape[4] >= 1)
    if not ok:
        raise SemvecValueError(
            f"Statistic 'top_inputs' of layer {name!r} has shape {shape}; expected "
            f"(N, K, Ch, S, S) with N={num_neurons} neurons, K >= 1 images, Ch 1 or 3 channels "
            "and S >= 1 pixels a side."
        )
    pixels = shape[0] * shape[1] * shape[3] * shape[4]
    if pixels > TOP_INPUTS_MAX_PIXELS:
        raise SemvecValueError(
            f"Statistic 'top_inputs' of layer {name!r} holds {pixels} pixels (N * K * S**2, "
            f"shape {shape}); at most {TOP_INPUTS_MAX_PIXELS} are allowed: keep fewer or "
            "smaller thumbnails."
        )
    return value.detach().to(device="cpu", copy=True).contiguous()
