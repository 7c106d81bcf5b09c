"""The text card that tells a newcomer how to read what the callback wrote to TensorBoard.

:func:`log_reading_guide` adds one Markdown card, :data:`TEXT_TAG`, to TensorBoard's Text tab
(``SummaryWriter.add_text`` on the logger's ``experiment``), once per callback and log folder,
on the process that writes (global rank zero: the caller's ``export``). It says what the
scalars, the figures and the projector show, and what a good fidelity reads, from the values
measured in ``docs/performance.md`` (the digits CNN: about 0.95 after 160 steps, 0.99 after
640, 0.99 or more once finished).

Example:
    >>> import torch
    >>> text = reading_guide({"net.fc": torch.zeros(10, 8)})
    >>> text.splitlines()[0]
    '## How to read the semantic vectors (lightning_semvec)'
    >>> "net.fc (10 neurons)" in text
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.projector import DEFAULT_HISTORY

__all__ = ["TEXT_TAG", "log_reading_guide", "reading_guide"]

#: The card's tag: first in the Text tab's ``semvec`` group.
TEXT_TAG = "semvec/how_to_read"
#: At most this many layers are named in the card's first line (then "and N more").
_NAMED_LAYERS = 8


def reading_guide(vectors: Mapping[str, Tensor], history: int = DEFAULT_HISTORY) -> str:
    """The card's Markdown for the layers ``vectors`` (``{layer: (N, d)}``, hooked order)."""
    named = [f"{name} ({v.shape[0]} neurons)" for name, v in list(vectors.items())[:_NAMED_LAYERS]]
    if len(vectors) > _NAMED_LAYERS:
        named.append(f"and {len(vectors) - _NAMED_LAYERS} more")
    return "\n".join([
        "## How to read the semantic vectors (lightning_semvec)",
        "",
        f"Every neuron of {', '.join(named) or 'the hooked layers'} has a small vector. "
        "Neurons that fire together on the data get similar vectors (cosine near 1), so a "
        "layer's vectors are a map of what its neurons do alike.",
        "",
        "### Scalars (TIME SERIES or SCALARS tab, group `semvec`)",
        "Type `semvec` in *Filter tags* to see only these.",
        "",
        "- `semvec/<layer>/fidelity`: how well the vectors describe the layer, Spearman's rank "
        "correlation between the neurons' activation similarity on the validation data and "
        "their vectors' similarity; one point per analysed validation epoch. Random vectors "
        "give 0, a perfect map 1. **Good: 0.9 or more.** On the package's digits CNN the "
        "vectors read about 0.25 to 0.5 after 40 steps, 0.95 after 160 and 0.99 after 640; at "
        "the end of `fit` they are finished to the best fit of the last validation pass "
        "(0.99 or more). Below 0.5 at the end: train longer or raise `dim`.",
        "- `semvec/<layer>/neighbour_agreement`: the share of each neuron's 5 nearest "
        "neighbours by activations that are also its nearest by vectors (random: about "
        "5 / (N - 1)).",
        "- `semvec/<layer>/align_loss` falls while the vectors learn; "
        "`semvec/<layer>/skipped_steps` counts steps skipped for NaN or Inf and stays 0.",
        "",
        "### Images (IMAGES tab, at the end of `fit`)",
        "- `semvec/<layer>/similarity`: left the vectors' similarity, right the neurons' "
        "activation similarity on the validation data, in the same clustered order (red +1, "
        "blue -1). Blocks that show in both are groups of neurons the vectors got right.",
        "- `semvec/<layer>/pca`: one point per neuron, placed by its vector's first two "
        "principal components and coloured by the class that activates it most; a cross is a "
        "dead neuron (never active on the validation data).",
        "",
        "### Projector (PROJECTOR tab)",
        "Each point is a **neuron**, not an input; its picture is the validation input that "
        "activates it most. Hover a point for its label (`layer #neuron: \"class\", "
        "selectivity`).",
        "",
        "- **Colour by preferred class in one click:** the *Bookmarks* panel, bottom right, "
        "*2-D PCA, coloured by preferred class* (or *Color by* → `preferred_class`). In 2-D "
        "the pictures are drawn at full size.",
        f"- The tensor menu (top left) lists `<layer>:<step>`: each layer's newest entry and "
        f"the {history} newest earlier ones. The one named `(latest) ...` is the newest "
        "export of the most telling of the widest layers, listed once more so that the "
        "projector opens on it. Entries written after `tensorboard` started show after a "
        "restart of it.",
    ]) + "\n"


def log_reading_guide(
    experiment: Any,
    vectors: Mapping[str, Tensor],
    step: int,
    messages: WarningCache,
    *,
    history: int = DEFAULT_HISTORY,
) -> bool:
    """Add the card (:func:`reading_guide`) at ``step`` through ``experiment`` (a
    ``SummaryWriter``, a ``TensorBoardLogger``'s ``experiment``), once per ``messages``
    (the callback's cache) and log folder; call it on global rank zero only.

    Returns:
        Whether the card was written now.

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.tensorboard import SummaryWriter
        >>> with tempfile.TemporaryDirectory() as run:
        ...     writer, cache = SummaryWriter(run), WarningCache("SemanticVectorCallback")
        ...     once = [log_reading_guide(writer, {"fc": torch.zeros(3, 2)}, s, cache)
        ...             for s in (5, 10)]
        ...     writer.close()
        >>> once
        [True, False]
    """
    key = f"text-card:{getattr(experiment, 'log_dir', '')}"
    if key in messages.said:
        return False
    messages.said.add(key)  # the cache's record of what was said, for this once-only card
    experiment.add_text(TEXT_TAG, reading_guide(vectors, history), global_step=step)
    return True
