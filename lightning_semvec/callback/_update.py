"""One update of the callback at the end of a training step: gather the step's activations from
every process, step the vectors, and log the losses
on the steps the loggers write. Runs on every process at every update."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
from torch import Tensor

from lightning_semvec._utils.logging_steps import logs_this_step
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.callback._capture import LayerCapture
from lightning_semvec.callback._gather import gather_activations
from lightning_semvec.vectors.semantic_vectors import SemanticVectors

__all__ = ["update_vectors"]


def update_vectors(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    vectors: SemanticVectors,
    names: Sequence[str],
    activations: Mapping[str, Tensor],
    capture: LayerCapture,
    *,
    messages: WarningCache,
) -> bool:
    """Step ``vectors`` on this step's ``{layer: (M, K)}`` activations of the layers this process
    ran (``names``: every layer, in the callback's fixed order).

    Returns:
        Whether the vectors stepped (False when no process ran any layer).
    """
    logging = logs_this_step(trainer, after_optimizer_step=True)
    gathered = gather_activations(
        pl_module, trainer.world_size, list(names), dict(activations),
        subsets=capture.subsets, widths=capture.widths,
        neuron_subset=lambda n: vectors.neuron_subset(n, capture.step, pl_module.device),
        messages=messages,
    )
    for name in gathered.not_called:  # on no process: the gather said so on every one
        messages.warn(f"missing:{name}", f"{messages.owner}: layer {name!r} was not called "
                      "in this training step, so its vectors were not updated.")
    if not gathered.activations:
        return False
    result = vectors.step(
        gathered.activations, gathered.weights, subsets=gathered.subsets,
        num_neurons=gathered.widths, with_losses=logging,
    )
    if logging:
        losses, skipped = vectors.last_losses(), vectors.skipped_counts()
        for name in result.names:
            pl_module.log(f"semvec/{name}/align_loss", losses[name], on_step=True,
                          on_epoch=False, batch_size=1)
            pl_module.log(f"semvec/{name}/skipped_steps", skipped[name].float(), on_step=True,
                          on_epoch=False, batch_size=1)
    return True
