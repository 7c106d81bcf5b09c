"""What the package reads from a model: which layers, and which numbers of their outputs are neurons.

The modules: ``layers`` (:func:`resolve_layers`: dotted names, glob patterns or module objects,
resolved once, with "did you mean" for a misspelt name; ``module_dict_key``, the one escaping
of layer names as ``ModuleDict`` keys) and ``readout`` (:class:`NeuronReadout` and
``layer_readout``: any output shape to a ``(samples, neurons)`` matrix), ``hooks``
(``ForwardHookManager``: the forward hooks, their handles and what a call means) and
``knowledge`` (``knowledge_of_readouts``: vectors and their readouts as knowledge).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> list(resolve_layers(net, ["0"]))
    ['0']
    >>> NeuronReadout().read(torch.ones(2, 4, 5, 5)).shape  # channels are the neurons
    torch.Size([2, 4])
"""

from lightning_semvec.capture.layers import LayerSpec, module_dict_key, resolve_layers
from lightning_semvec.capture.readout import NeuronReadout, layer_readout, layer_readouts

__all__ = ["LayerSpec", "NeuronReadout", "layer_readout", "layer_readouts", "module_dict_key", "resolve_layers"]
