"""``knowledge_of_readouts``: the one way vectors read through readouts become knowledge.

The callback (:meth:`~lightning_semvec.SemanticVectorCallback.to_knowledge`),
:func:`~lightning_semvec.embed_neurons` and :func:`~lightning_semvec.embed_models` all record
each layer's readout (``reduction``, ``neuron_dim``) and the model's class beside the vectors;
they build the :class:`~lightning_semvec.StaticKnowledge` here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from torch import Tensor, nn

from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.knowledge import StaticKnowledge

__all__ = ["knowledge_of_readouts", "model_class_path"]


def model_class_path(model: nn.Module) -> str:
    """``"module.QualName"`` of ``model``'s class, the knowledge's ``source_model``.

    Example:
        >>> model_class_path(nn.Linear(2, 2))
        'torch.nn.modules.linear.Linear'
    """
    return f"{type(model).__module__}.{type(model).__qualname__}"


def knowledge_of_readouts(
    vectors: Mapping[str, Tensor],
    readouts: Mapping[str, NeuronReadout],
    *,
    similarity: SimilarityKind | str,
    source_model: str | None,
    statistics: Mapping[str, Mapping[str, Tensor]] | None = None,
    training_steps: int = 0,
    class_names: Sequence[str] | None = None,
    extra: Mapping[str, str] | None = None,
    unlearned: Collection[str] = (),
) -> StaticKnowledge:
    """Knowledge of ``{layer: (N, d)}`` vectors, each layer's readout recorded with it.

    Args:
        vectors: the vectors, in the layers' order.
        readouts: the readout of every layer of ``vectors`` (others are ignored).
        similarity: the activation similarity the vectors model.
        source_model: the model's class path (:func:`model_class_path`), or ``None``.
        statistics, training_steps, class_names, extra: as for
            :meth:`~lightning_semvec.StaticKnowledge.from_vectors`.
        unlearned: layers whose vectors learned nothing, marked ``learned=False``.

    Example:
        >>> import torch
        >>> knowledge = knowledge_of_readouts(
        ...     {"fc": torch.zeros(3, 2)}, {"fc": NeuronReadout("positions", -1)},
        ...     similarity="cosine", source_model=model_class_path(nn.Linear(1, 3)))
        >>> knowledge["fc"].reduction, knowledge["fc"].neuron_dim, knowledge.source_model
        ('positions', -1, 'torch.nn.modules.linear.Linear')
    """
    return StaticKnowledge.from_vectors(
        dict(vectors),
        similarity=similarity,
        reduction={name: readouts[name].reduction for name in vectors},
        neuron_dim={name: readouts[name].neuron_dim for name in vectors},
        statistics={name: dict(values) for name, values in (statistics or {}).items()},
        source_model=source_model,
        training_steps=training_steps,
        class_names=list(class_names) if class_names is not None else None,
        extra=extra,
        learned={name: name not in unlearned for name in vectors},
    )
