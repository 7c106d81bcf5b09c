"""``JointEmbeddingModule``: the validation passes of :func:`lightning_semvec.embed_models`.

Each batch goes through every model in turn; the chosen layers' activations of all of them are
put side by side into one ``(M, N_1 + N_2 + ...)`` matrix, one row per input, and streamed as
the single layer :data:`JOINT_LAYER` of :class:`~lightning_semvec.embedding._pass.EmbeddingModule`.
Its similarity is therefore the joint activation similarity of every chosen neuron of every
model, exact or sketched exactly as one layer's, and the vectors fitted to it put all the
neurons in one space.

The same batches also stream the linear CKA between every pair of chosen layers, within each
model and across models (:class:`~lightning_semvec.metrics.LinearCKA` over all the layers side
by side, its unbiased minibatch estimator in float64), in the first pass only: no pass more.
Its features are each layer's whole output per input, flattened (``"flattened"``, as Kornblith
et al. and ``torch_cka`` compare layers), or the neurons as read for the joint space
(``"readout"``: one value per neuron, the mean over positions of a conv layer).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.capture.hooks import ForwardHookManager
from lightning_semvec.capture.layers import module_dict_key
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.embedding._pass import EmbeddingConfig, EmbeddingModule
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.cka import MIN_UNBIASED_SAMPLES, cka_from_hsic
from lightning_semvec.metrics.cka import LinearCKA

__all__ = ["CKA_MAX_ROWS", "JOINT_LAYER", "CkaFeatures", "JointEmbeddingModule"]

#: What the CKA of the joint pass compares (see the module docstring;
#: :data:`~lightning_semvec.knowledge.joint_space.CKA_FEATURES`).
CkaFeatures = Literal["flattened", "readout"]

#: The name of the joint "layer" (all chosen neurons of all models) inside the module.
JOINT_LAYER = "joint"
#: Most rows in one CKA minibatch: each layer's Gram is ``rows x rows`` float64 (2 MiB at 512).
#: A batch with more rows (``reduction="positions"``, or large batches) is split into
#: near-equal minibatches, every one of them used.
CKA_MAX_ROWS = 512


class JointEmbeddingModule(EmbeddingModule):
    """Runs every model of ``models`` on each validation batch and streams their joint layer.

    Args:
        models: ``{model name: module}``, in the order of the joint space.
        readouts: ``{joint layer name: readout}`` of every chosen layer, grouped by model in
            the order of ``models``; the joint space's neurons are theirs, in this order.
        owners: ``{joint layer name: model name}``.
        config, messages: as for :class:`~lightning_semvec.embedding._pass.EmbeddingModule`.
        cka: the features the CKA compares (:data:`CkaFeatures`), or ``None`` for no CKA.

    The caller registers the forward hooks that call :meth:`capture` through :attr:`hooks`
    (and removes them): it refuses a second call of one layer in one model's forward, since
    the joint space needs one output per input from each layer.

    In the first pass every batch also updates :attr:`cka` with every layer's features, on every
    process; at the pass's end the sums of all processes give :attr:`cka_matrix`, the ``(L, L)``
    CKA between the ``L`` chosen layers in the order of ``readouts`` (``None`` when no minibatch
    had 4 rows, or without ``cka``), and :attr:`cka_minibatches`.
    """

    who = "embed_models"

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        readouts: Mapping[str, NeuronReadout],
        owners: Mapping[str, str],
        config: EmbeddingConfig,
        messages: WarningCache,
        cka: CkaFeatures | None = "flattened",
    ) -> None:
        holder = nn.ModuleDict({module_dict_key(name): model for name, model in models.items()})
        super().__init__(holder, readouts, config, messages)
        self.model_names = list(models)
        self.owners = dict(owners)
        self.current_model: str | None = None  # the model whose forward is running
        self.hooks = ForwardHookManager(second_call="error", who=self.who)
        self.widths: dict[str, int] = {}  # joint layer name -> neurons, from the first batch
        self.similarity: tuple[Tensor, Tensor] | None = None  # exact (S, alive), on the CPU
        self._captured: dict[str, Tensor] = {}
        self._flattened: dict[str, Tensor] = {}
        self.cka_features = cka
        # Every layer of every model side by side: one metric gives the CKA within each model
        # and across models from the same Grams (at least 2 layers: one per model).
        self.cka = LinearCKA(num_layers_a=len(self.readouts)) if cka is not None else None
        self.cka_matrix: Tensor | None = None  # (L, L) float64 on the CPU, after the first pass
        self.cka_minibatches = 0

    def forward(self, batch: Any) -> None:
        inputs = self.config.input_fn(batch)
        self._captured, self._flattened = {}, {}
        try:
            for name in self.model_names:
                self.current_model = name
                self.hooks.new_forward()  # a module shared by two models runs once in each
                cast(nn.ModuleDict, self.model)[module_dict_key(name)](inputs)
        finally:
            self.current_model = None
        rows = self._joint_rows()
        if self.pass_index == 0 and self.cka is not None:
            features = self._flattened if self.cka_features == "flattened" else self._captured
            self._update_cka(self.cka, [features[layer] for layer in self.readouts])
        self._captured, self._flattened = {}, {}
        self.stream(JOINT_LAYER, rows)

    def on_validation_epoch_end(self) -> None:
        first = self.pass_index == 0
        super().on_validation_epoch_end()  # raises on every process if one had no batch
        if first and self.cka is not None:
            self._compute_cka(self.cka)

    def capture(self, model_name: str, layer: str, output: Any) -> None:
        """Keep one call's output of ``layer`` (a joint layer name) of model ``model_name``
        while that model runs (from its forward hook). Copied: the joint rows are made after
        every model has run, and a later in-place op must not change what was read."""
        if not self.streaming or self.current_model != model_name:
            return
        readout = self.readouts[layer]
        self._captured[layer] = readout.read(output, layer, copy=True)  # checks the output
        if self.pass_index == 0 and self.cka_features == "flattened":
            # every value of the output per input, in its own dtype (the CKA works in float64)
            self._flattened[layer] = readout.select(output, layer).detach().flatten(1).clone()

    def _joint_rows(self) -> Tensor:
        missing = [layer for layer in self.readouts if layer not in self._captured]
        if missing:
            raise SemvecValueError(
                f"embed_models: layers {missing} were never called in their model's forward: "
                "choose layers the forward runs (see model.named_modules()).")
        rows = {layer: int(a.shape[0]) for layer, a in self._captured.items()}
        if len(set(rows.values())) > 1:
            raise SemvecValueError(
                f"embed_models: the layers give different numbers of rows for one batch {rows}; "
                "the joint similarity needs the same samples from every layer: use "
                "reduction='mean' (one row per input), or 'positions' only for layers of the "
                "same spatial size.")
        widths = {layer: int(a.shape[1]) for layer, a in self._captured.items()}
        if not self.widths:
            self.widths = {layer: widths[layer] for layer in self.readouts}
        return torch.cat([self._captured[layer].float() for layer in self.readouts], dim=1)

    def _update_cka(self, cka: LinearCKA, layers: list[Tensor]) -> None:
        """One batch's rows of every layer, in minibatches of at most :data:`CKA_MAX_ROWS`."""
        rows = {layer: int(x.shape[0]) for layer, x in zip(self.readouts, layers)}
        if len(set(rows.values())) > 1:
            raise SemvecValueError(
                f"embed_models: the layers' outputs give different numbers of samples for one "
                f"batch {rows}, so no CKA compares them: pass cka='readout' (the rows of the "
                "joint space) or cka=None.")
        pieces = -(-int(layers[0].shape[0]) // CKA_MAX_ROWS)
        for minibatch in zip(*(torch.tensor_split(layer, max(1, pieces)) for layer in layers)):
            cka.update(list(minibatch))

    def _compute_cka(self, cka: LinearCKA) -> None:
        """The CKA of all the processes' minibatches, on every process (every one joins the
        gather, in the same order, whatever it saw)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            with cka.sync_context():  # the sums of every process; a no-op on one
                minibatches, skipped = int(cka.num_batches), int(cka.num_skipped)
                matrix = (cka_from_hsic(cka.hsic_ab, cka.hsic_aa_diag, cka.hsic_bb_diag).cpu()
                          if minibatches else None)
        if matrix is None:
            rank_zero_warn(
                f"{self.who}: no batch had {MIN_UNBIASED_SAMPLES} inputs or more ({skipped} smaller "
                "ones), so no CKA between the layers is stored: use batches of 32 inputs or more.")
        self.cka_matrix, self.cka_minibatches = matrix, minibatches

    def _fit_similarity(self, name: str, similarity: Tensor, alive: Tensor) -> Tensor:
        self.similarity = (similarity.cpu(), alive.cpu())  # the matching's correlations
        return super()._fit_similarity(name, similarity, alive)
