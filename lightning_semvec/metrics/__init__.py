"""torchmetrics metrics that measure whether semantic vectors mean something.

The measures are described in ``docs/method.md#do-the-vectors-mean-something``.

- :class:`ActivationSimilarity`: streams the ``(n, n)`` activation similarity and the alive
  mask of a fixed subset of a layer's neurons over a held-out set.
- :class:`SemanticFidelity`: streams the activation similarity over a held-out set and
  compares it with the semantic similarity of given vectors (Spearman's rho of the pairs,
  neighbour agreement).
- :class:`NeuronActivationStatistics`: per-neuron mean activation, class-conditional means,
  class selectivity, preferred class and dead neurons.
- :class:`SketchedSimilarity`: streams a randomized sketch of a wide layer's activation
  similarity, whose top eigenpairs :func:`~lightning_semvec.embed_neurons` starts from.
- :class:`TopActivatingInputs`: the inputs (as thumbnails) that activate each neuron most.
- :class:`LinearCKA`: the linear CKA between the layers of one or two models, from the
  unbiased HSIC of minibatches (Nguyen et al., 2021).

All but :class:`TopActivatingInputs` keep only sums as state (``dist_reduce_fx="sum"`` or
``"max"``), it the running top ``k`` per neuron; under DDP each process updates with its own
share and ``compute()`` sees the whole set.
"""

from lightning_semvec.metrics.activation_similarity import ActivationSimilarity
from lightning_semvec.metrics.cka import LinearCKA
from lightning_semvec.metrics.fidelity import SemanticFidelity
from lightning_semvec.metrics.neuron_statistics import NeuronActivationStatistics
from lightning_semvec.metrics.similarity_sketch import SketchedSimilarity
from lightning_semvec.metrics.top_activating_inputs import TopActivatingInputs

__all__ = [
    "ActivationSimilarity",
    "LinearCKA",
    "NeuronActivationStatistics",
    "SemanticFidelity",
    "SketchedSimilarity",
    "TopActivatingInputs",
]
