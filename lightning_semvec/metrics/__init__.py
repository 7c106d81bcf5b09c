"""torchmetrics metrics that measure whether semantic vectors mean something (METHOD.md §7).

- :class:`SemanticFidelity`: streams the activation similarity over a held-out set and
  compares it with the semantic similarity of given vectors (Spearman's rho of the pairs,
  neighbour agreement).
- :class:`NeuronActivationStatistics`: per-neuron mean activation, class-conditional means,
  class selectivity, preferred class and dead neurons.

Both keep only sums as state (``dist_reduce_fx="sum"`` or ``"max"``), so under DDP each
process updates with its own share and ``compute()`` sees the whole set.
"""

from lightning_semvec.metrics.fidelity import SemanticFidelity
from lightning_semvec.metrics.neuron_statistics import NeuronActivationStatistics
from lightning_semvec.metrics.top_activating_inputs import TopActivatingInputs

__all__ = ["NeuronActivationStatistics", "SemanticFidelity", "TopActivatingInputs"]
