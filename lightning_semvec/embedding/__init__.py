"""Semantic vectors for models already trained, at the optimum, after the fact.

The modules: ``neuron_embedding`` (:func:`embed_neurons`, one model, and the pass loop and
trainer it shares), ``_pass`` (``EmbeddingModule``, the ``LightningModule`` whose validation
passes stream a frozen model's activation statistics), ``joint_embedding``
(:func:`embed_models`: several models' neurons in one space, and their matching) and
``_joint_pass`` (its passes over every model at once). The joint space in the knowledge file
is read by :mod:`lightning_semvec.knowledge.joint_space`.
"""

from lightning_semvec.embedding.joint_embedding import embed_models
from lightning_semvec.embedding.neuron_embedding import embed_neurons

__all__ = ["embed_models", "embed_neurons"]
