"""The learnable semantic vectors: a Lightning-free ``nn.Module``, as ``AveragedModel`` is.

The modules: ``semantic_vectors`` (:class:`SemanticVectors`, the vectors of the neurons of
several layers, their optimizer and their step, and :class:`StepResult`) and
``_bad_layer_step`` (one optimizer step that leaves a layer whose batch was bad exactly as it
was, optimizer state included).

Example:
    >>> import torch
    >>> vectors = SemanticVectors(dim=3, seed=0)
    >>> _ = vectors.step({"fc": torch.randn(16, 5)})  # a layer's vectors start on its first step
    >>> vectors["fc"].shape
    torch.Size([5, 3])
"""

from lightning_semvec.vectors.semantic_vectors import (
    OptimizerCallable,
    SemanticVectors,
    StepResult,
)

__all__ = ["OptimizerCallable", "SemanticVectors", "StepResult"]
