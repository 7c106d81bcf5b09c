"""``JointEmbeddingModule``: the validation passes of :func:`lightning_semvec.embed_models`.

Each batch goes through every model in turn; the chosen layers' activations of all of them are
put side by side into one ``(M, N_1 + N_2 + ...)`` matrix, one row per input, and streamed as
the single layer :data:`JOINT_LAYER` of :class:`~lightning_semvec.embedding._pass.EmbeddingModule`.
Its similarity is therefore the joint activation similarity of every chosen neuron of every
model, exact or sketched exactly as one layer's, and the vectors fitted to it put all the
neurons in one space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.capture.hooks import ForwardHookManager
from lightning_semvec.capture.layers import module_dict_key
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.embedding._pass import EmbeddingConfig, EmbeddingModule
from lightning_semvec.errors import SemvecValueError

__all__ = ["JOINT_LAYER", "JointEmbeddingModule"]

#: The name of the joint "layer" (all chosen neurons of all models) inside the module.
JOINT_LAYER = "joint"


class JointEmbeddingModule(EmbeddingModule):
    """Runs every model of ``models`` on each validation batch and streams their joint layer.

    Args:
        models: ``{model name: module}``, in the order of the joint space.
        readouts: ``{joint layer name: readout}`` of every chosen layer, grouped by model in
            the order of ``models``; the joint space's neurons are theirs, in this order.
        owners: ``{joint layer name: model name}``.
        config, messages: as for :class:`~lightning_semvec.embedding._pass.EmbeddingModule`.

    The caller registers the forward hooks that call :meth:`capture` through :attr:`hooks`
    (and removes them): it refuses a second call of one layer in one model's forward, since
    the joint space needs one output per input from each layer.
    """

    who = "embed_models"

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        readouts: Mapping[str, NeuronReadout],
        owners: Mapping[str, str],
        config: EmbeddingConfig,
        messages: WarningCache,
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

    def forward(self, batch: Any) -> None:
        inputs = self.config.input_fn(batch)
        self._captured = {}
        try:
            for name in self.model_names:
                self.current_model = name
                self.hooks.new_forward()  # a module shared by two models runs once in each
                cast(nn.ModuleDict, self.model)[module_dict_key(name)](inputs)
        finally:
            self.current_model = None
        rows = self._joint_rows()
        self._captured = {}
        self.stream(JOINT_LAYER, rows)

    def capture(self, model_name: str, layer: str, output: Any) -> None:
        """Keep one call's output of ``layer`` (a joint layer name) of model ``model_name``
        while that model runs (from its forward hook). Copied: the joint rows are made after
        every model has run, and a later in-place op must not change what was read."""
        if not self.streaming or self.current_model != model_name:
            return
        self._captured[layer] = self.readouts[layer].read(output, layer, copy=True)

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

    def _fit_similarity(self, name: str, similarity: Tensor, alive: Tensor) -> Tensor:
        self.similarity = (similarity.cpu(), alive.cpu())  # the matching's correlations
        return super()._fit_similarity(name, similarity, alive)
