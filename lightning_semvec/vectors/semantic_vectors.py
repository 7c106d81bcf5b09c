"""``SemanticVectors``: the learnable vectors of the neurons of several layers, and their step.

An ``nn.Module`` with no Lightning in it, as ``torch.optim.swa_utils.AveragedModel`` is to
Lightning's ``WeightAveraging``: :class:`~lightning_semvec.SemanticVectorCallback` owns the
hooks, the schedule, the gather across processes and the logging; this module owns the
vectors, their seeded initialisation, the neuron subsets of wide layers, their optimizer, and
:meth:`SemanticVectors.step`, one optimizer step on the alignment loss (``docs/method.md``,
"Learning them") that leaves a layer whose batch was bad exactly as it was.
"""

from __future__ import annotations

import copy
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from lightning_semvec._utils.checks import DIM_HINT, check_choice, check_int, check_number
from lightning_semvec._utils.deprecation import DEFER_REMOVED, accept_removed_keywords
from lightning_semvec.capture.layers import module_dict_key
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.alignment import (
    ALIGNMENT_FORMS,
    DENSE_MAX_NEURONS,
    AlignmentForm,
)
from lightning_semvec.functional.alignment_gradient import (
    alignment_gradients,
    split_alignment_runs,
)
from lightning_semvec.functional.similarity import SIMILARITY_KINDS, SimilarityKind
from lightning_semvec.vectors._bad_layer_step import step_skipping_bad_layers

__all__ = ["NAMED_OPTIMIZERS", "OptimizerCallable", "SemanticVectors", "StepResult", "group_key", "state_key",
           "step_skipping_bad_layers"]

#: Takes the vectors' parameters and returns their optimizer, like
#: ``lightning.pytorch.cli.OptimizerCallable`` (e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``).
OptimizerCallable = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
#: The optimizers that can be named; a named one gets the ``lr`` given with it.
NAMED_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


class StepResult(NamedTuple):
    """What one :meth:`SemanticVectors.step` did, for the ``L`` layers it stepped.

    Attributes:
        names: the layers, in the order of ``ok`` and ``losses``.
        ok: ``(L,)`` bool: the layer was updated (its batch was finite and had two or more
            alive neurons); a layer that is not ok kept its vectors and optimizer state.
        losses: ``(L,)`` float32 alignment losses, or ``None`` unless asked for.
    """

    names: list[str]
    ok: Tensor
    losses: Tensor | None


def group_key(activations: Tensor) -> tuple[int, bool]:
    """Layers whose activations share this key are standardised (and, under DDP, gathered)
    together: the same number of rows, and all narrow (dense form) or one wide layer."""
    return activations.shape[0], activations.shape[1] <= DENSE_MAX_NEURONS


class _Layer(nn.Module):
    """One layer's ``(N, d)`` vectors and its counters (buffers, so they follow ``.to()``)."""

    skipped_steps: Tensor
    last_loss: Tensor

    def __init__(self, vectors: Tensor) -> None:
        super().__init__()
        self.vectors = nn.Parameter(vectors)
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.int64, device=vectors.device))
        self.register_buffer("last_loss", torch.zeros((), device=vectors.device))


def state_key(name: str, entry: str = "vectors") -> str:
    """The :meth:`SemanticVectors.state_dict` key of one layer's ``entry`` (``"vectors"``,
    ``"skipped_steps"`` or ``"last_loss"``)."""
    return f"layers.{module_dict_key(name)}.{entry}"


class SemanticVectors(nn.Module):
    """The semantic vectors ``E`` (``(N, d)`` float32 per layer) and their optimizer.

    A layer's vectors are created the first time :meth:`step` (or :meth:`materialize`) sees
    it, from a generator seeded by ``seed`` and the layer's name, so the global random state
    is never touched and each layer starts the same whichever others are learned with it.

    Args:
        dim: ``d``, the length of each vector (2 to 64 is typical).
        similarity: activation similarity, ``"pearson"`` (centred) or ``"cosine"``.
        form: ``"auto"`` (never an ``N x N`` matrix for wide layers), ``"dense"`` or
            ``"factorized"``; both forms give the same step to float precision.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (each with ``lr``), or an
            :data:`OptimizerCallable` that takes the parameters and returns an optimizer.
        lr: the learning rate of a named optimizer.
        seed: seeds the vectors' initialisation and the wide layers' neuron subsets.
        max_neurons_per_step: a layer wider than this uses a random subset of this many
            neurons per step (:meth:`neuron_subset`); ``None`` uses every neuron.

    Example:
        >>> import torch
        >>> vectors = SemanticVectors(dim=4, seed=0)
        >>> activations = {"fc": torch.randn(32, 6), "conv": torch.randn(32, 3)}
        >>> result = vectors.step(activations, with_losses=True)
        >>> result.names, result.ok.tolist(), vectors["fc"].shape
        (['fc', 'conv'], [True, True], torch.Size([6, 4]))
        >>> result = vectors.step({"fc": torch.full((32, 6), float("nan"))})
        >>> result.ok.tolist(), vectors.skipped_steps()
        ([False], {'fc': 1, 'conv': 0})
    """

    def __init__(
        self,
        dim: int = 16,
        *,
        similarity: SimilarityKind = "pearson",
        form: AlignmentForm = "auto",
        optimizer: str | OptimizerCallable = "adam",
        lr: float = 1e-2,
        seed: int = 0,
        max_neurons_per_step: int | None = DENSE_MAX_NEURONS,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, 2, hint=DIM_HINT)
        self.similarity: SimilarityKind = check_choice("similarity", similarity, SIMILARITY_KINDS)
        self.form: AlignmentForm = check_choice("form", form, ALIGNMENT_FORMS)
        if isinstance(optimizer, str):
            check_choice(
                "optimizer", optimizer, NAMED_OPTIMIZERS,
                hint="Or pass a callable that takes the parameters and returns an optimizer.",
            )
        elif not callable(optimizer):
            raise SemvecValueError(
                f"optimizer must be one of {sorted(NAMED_OPTIMIZERS)} or a callable that takes "
                f"the parameters and returns a torch.optim.Optimizer, got {optimizer!r}."
            )
        self.optimizer_spec = optimizer
        self.lr = check_number("lr", lr, positive=True)
        self.seed = check_int("seed", seed)
        if max_neurons_per_step is not None:
            check_int("max_neurons_per_step", max_neurons_per_step, 2, hint="Or None for all.")
        self.max_neurons_per_step = max_neurons_per_step
        self.layers = nn.ModuleDict()
        self._names: dict[str, str] = {}  # layer name -> ModuleDict key
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ views
    @property
    def layer_names(self) -> list[str]:
        """The layers that have vectors, in the order they were created."""
        return list(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> nn.Parameter:
        """The ``(N, d)`` parameter of one layer (the live tensor, not a copy)."""
        return self._parameter(name)

    def _parameter(self, name: str) -> nn.Parameter:
        if name not in self._names:
            raise KeyError(f"No vectors for layer {name!r}; layers: {self.layer_names}.")
        return self._layer(self._names[name]).vectors

    def _layer(self, key: str) -> _Layer:
        return cast(_Layer, self.layers[key])  # ModuleDict is typed for any Module

    def vectors(self) -> dict[str, Tensor]:
        """``{layer: (N, d) float32}``: detached CPU copies of every layer's vectors."""
        return {name: self[name].detach().cpu().clone() for name in self._names}

    def skipped_steps(self) -> dict[str, int]:
        """How many steps each layer skipped (non-finite activations, < 2 alive neurons)."""
        return {n: int(self._layer(k).skipped_steps) for n, k in self._names.items()}

    def skipped_counts(self) -> dict[str, Tensor]:
        """:meth:`skipped_steps` as 0-d int64 tensors on the vectors' device (no host sync)."""
        return {n: self._layer(k).skipped_steps for n, k in self._names.items()}

    def last_losses(self) -> dict[str, Tensor]:
        """Each layer's alignment loss at its last good step that computed losses (0-d)."""
        return {n: self._layer(k).last_loss for n, k in self._names.items()}

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The vectors' optimizer (``None`` before the first step)."""
        return self._optimizer

    # ------------------------------------------------------------------ creation
    def neuron_subset(self, num_neurons: int, step: int, device: torch.device) -> Tensor | None:
        """Indices of the neurons a layer of ``num_neurons`` uses at ``step``, or ``None`` for all.

        Drawn from a generator seeded by (seed, step): the same on every process and after a
        resume, with no generator state to save or to send to spawned processes.
        """
        if self.max_neurons_per_step is None or num_neurons <= self.max_neurons_per_step:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        chosen = torch.randperm(num_neurons, generator=generator)
        return chosen[: self.max_neurons_per_step].to(device, non_blocking=True)

    def materialize(self, num_neurons: Mapping[str, int], device: torch.device) -> None:
        """Create the vectors of layers seen for the first time (``{layer: N}``) on ``device``.

        Raises:
            ValueError: a known layer now has another number of neurons.
        """
        for name, width in num_neurons.items():
            if name in self._names:
                known = self._parameter(name).shape[0]
                if known != width:
                    raise SemvecValueError(
                        f"Layer {name!r} now has {width} neurons but its semantic vectors have "
                        f"{known} (from a checkpoint or an earlier step)."
                    )
                continue
            self._add_layer(name, self.initial_vectors(name, width).to(device))

    def initial_vectors(self, name: str, num_neurons: int) -> Tensor:
        """``(num_neurons, dim)`` float32 (CPU): the seeded start of layer ``name``'s vectors."""
        generator = torch.Generator().manual_seed(self.seed + zlib.crc32(name.encode()))
        return torch.randn(num_neurons, self.dim, generator=generator)

    def unlearned_layers(self) -> list[str]:
        """The layers whose every update was skipped (a constant output, a single neuron): their
        vectors are still, bit for bit, their seeded start (:meth:`initial_vectors`). One host
        sync per layer that skipped a step; meant for an epoch's end or an export, not a step.

        Example:
            >>> import torch
            >>> vectors = SemanticVectors(dim=2)
            >>> _ = vectors.step({"fc": torch.randn(8, 3), "const": torch.ones(8, 3)})
            >>> vectors.unlearned_layers()
            ['const']
        """
        unlearned = []
        for name, skipped in self.skipped_steps().items():
            values = self[name].detach()
            if skipped and torch.equal(values.cpu(), self.initial_vectors(name, values.shape[0])):
                unlearned.append(name)
        return unlearned

    def _add_layer(self, name: str, values: Tensor) -> None:
        key = module_dict_key(name)
        self.layers[key] = _Layer(values)
        self._names[name] = key
        if self._optimizer is not None:
            # A layer seen late joins; the others keep their optimizer state.
            old = self._optimizer
            self._optimizer = self._make_optimizer()
            for param, state in old.state.items():
                self._optimizer.state[param] = state

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [self[name] for name in self._names]
        if callable(self.optimizer_spec):
            return self.optimizer_spec(params)
        # One kernel for all layers on CUDA. Not on the CPU: there the fused kernel made spawned
        # DDP processes abort at exit ("terminate called without an active exception", about
        # one run in six of tests/test_callback_ddp.py), for about 0.1 ms per update saved.
        fused = torch.__version__ >= "2.4" and all(p.device.type == "cuda" for p in params)
        options = {"fused": True} if fused else {}
        return NAMED_OPTIMIZERS[self.optimizer_spec](params, lr=self.lr, **options)

    def _ensure_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
            pending, self._pending_optimizer_state = self._pending_optimizer_state, None
            if pending is not None:
                self._load_optimizer_state(pending)
        return self._optimizer

    def _load_optimizer_state(self, pending: dict[str, Any]) -> None:
        assert self._optimizer is not None
        kind = type(self._optimizer).__qualname__
        if pending.get("class") not in (None, kind):  # None: saved by version 0.1
            warnings.warn(
                f"SemanticVectors: the saved optimizer state is of {pending.get('class')}, this "
                f"optimizer is {kind}; the vectors are restored, the optimizer starts fresh.",
                stacklevel=3,
            )
            return
        self._optimizer.load_state_dict(pending["state"])

    # ------------------------------------------------------------------ the step
    def step(
        self,
        activations: Mapping[str, Tensor],
        weights: Tensor | Mapping[str, Tensor | None] | None = None,
        *,
        subsets: Mapping[str, Tensor] | None = None,
        num_neurons: Mapping[str, int] | None = None,
        with_losses: bool = False,
        **deprecated: Any,
    ) -> StepResult:
        """One optimizer step of every given layer's vectors on its alignment loss.

        Args:
            activations: ``{layer: (M, N) activations}`` of one batch (any float dtype; the
                work is done in float32 on the vectors' device). Layers with the same ``M``
                are standardised in one computation.
            weights: ``(M,)`` 0/1 weights of the rows (0 marks padding), one tensor for every
                layer or ``{layer: weights}``; ``None``: every row counts.
            subsets: ``{layer: (K,) neuron indices}`` for layers whose activations hold only
                the neurons :meth:`neuron_subset` chose; other neurons get no gradient.
            num_neurons: ``{layer: N}``, the full width of subsetted layers (needed to create
                their vectors on first sight).
            with_losses: also compute the loss values (kept as :meth:`last_losses`).
            deprecated: ``defer`` (removed in 0.2: it was slower than this synchronous step on
                every case measured) is accepted with a warning and has no effect.

        Returns:
            A :class:`StepResult`. A layer whose ``ok`` flag is False
            (non-finite values, fewer than two alive neurons) kept its vectors and optimizer
            state; its :meth:`skipped_steps` count went up.
        """
        accept_removed_keywords(deprecated, "SemanticVectors.step", {"defer": DEFER_REMOVED})
        subsets = subsets or {}
        if not activations:
            return StepResult([], torch.zeros(0, dtype=torch.bool), None)
        device = next(iter(activations.values())).device
        widths = {
            name: (num_neurons or {}).get(name, acts.shape[1]) if name in subsets else acts.shape[1]
            for name, acts in activations.items()
        }
        self.materialize(widths, self._parameter(next(iter(self._names))).device if self._names else device)
        self._ensure_optimizer()
        return self._step_now(activations, weights, subsets, with_losses)

    @torch.no_grad()
    def _step_now(
        self,
        activations: Mapping[str, Tensor],
        weights: Tensor | Mapping[str, Tensor | None] | None,
        subsets: Mapping[str, Tensor],
        with_losses: bool,
    ) -> StepResult:
        layers = {n: self._layer(self._names[n]) for n in activations}  # each looked up once
        device = next(iter(layers.values())).vectors.device
        groups: dict[tuple[Any, ...], list[str]] = {}
        for name, acts in activations.items():
            layer_weights = weights.get(name) if isinstance(weights, Mapping) else weights
            groups.setdefault((*group_key(acts), id(layer_weights)), []).append(name)
        names: list[str] = []
        gradients: list[Tensor] = []
        losses: list[Tensor] = []
        ok_flags: list[Tensor] = []
        for members in groups.values():
            parts = [a if (a := activations[n]).device == device else a.to(device) for n in members]
            acts = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            group_weights = weights.get(members[0]) if isinstance(weights, Mapping) else weights
            # Under no_grad: the parameters themselves, no detached aliases to make.
            vectors = [
                layers[n].vectors if n not in subsets
                else layers[n].vectors.index_select(0, subsets[n]) for n in members
            ]
            for form, columns, run in split_alignment_runs(self.form, acts, vectors, self.dim):
                out = alignment_gradients(
                    columns, [vectors[i] for i in run], self.similarity, form,
                    group_weights, with_losses,
                )
                names.extend(members[i] for i in run)
                gradients.extend(out.gradients)
                ok_flags.append(out.ok)
                if out.losses is not None:
                    losses.append(out.losses)
        counters = [layers[n] for n in names]
        params = [layer.vectors for layer in counters]
        gradients = [
            g if n not in subsets else torch.zeros_like(p).index_copy_(0, subsets[n], g)
            for n, p, g in zip(names, params, gradients)
        ]
        ok = torch.cat(ok_flags) if len(ok_flags) > 1 else ok_flags[0]
        assert self._optimizer is not None  # step() made it
        flags = step_skipping_bad_layers(
            self._optimizer, params, gradients, ok, sync_free=device.type != "cpu"
        )
        if flags is not None:  # host flags: touch the counters only when a layer was bad
            for layer, good in zip(counters, flags):
                if not good:
                    layer.skipped_steps += 1
        else:
            for layer, good_flag in zip(counters, ok.unbind()):
                layer.skipped_steps += (~good_flag).to(torch.int64)
        values = None
        if with_losses:
            values = torch.cat(losses) if len(losses) > 1 else losses[0]
            for layer, loss, good_flag in zip(counters, values.unbind(), ok.unbind()):
                layer.last_loss.copy_(torch.where(good_flag, loss, layer.last_loss))
        return StepResult(names, ok, values)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        """The layer order and the optimizer's state (saved with :meth:`state_dict`)."""
        if self._optimizer is not None:
            # A copy: the optimizer keeps stepping, and Optimizer.load_state_dict keeps the
            # tensors it is given when device and dtype match, so a reference would be shared.
            optimizer: dict[str, Any] | None = {"class": type(self._optimizer).__qualname__,
                         "state": copy.deepcopy(self._optimizer.state_dict())}
        else:
            optimizer = self._pending_optimizer_state
        return {"layers": list(self._names), "optimizer": optimizer}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Keep the optimizer's state until the next step builds the optimizer, on the
        device the vectors are on by then."""
        self._optimizer = None
        self._pending_optimizer_state = state.get("optimizer")

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load vectors, counters and optimizer state, creating the layers they name.

        Raises:
            ValueError: the saved vectors have another ``dim``, or a known layer another
                number of neurons.
        """
        extra = state_dict.get("_extra_state") or {}
        for name in extra.get("layers", []):
            saved = state_dict[state_key(name)]
            if saved.shape[1] != self.dim:
                raise SemvecValueError(
                    f"The saved semantic vectors of layer {name!r} have dim={saved.shape[1]}, "
                    f"these have dim={self.dim}: use the same dim to resume, or start fresh "
                    "without the saved state."
                )
            if name in self._names:
                if self[name].shape != saved.shape:
                    raise SemvecValueError(
                        f"Layer {name!r} has {self[name].shape[0]} neurons but the saved "
                        f"vectors have {saved.shape[0]}."
                    )
            else:
                self._add_layer(name, torch.zeros(saved.shape, device=saved.device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
