"""The text card that tells a newcomer how to read what the callback wrote to TensorBoard.

:func:`reading_guide` is the Markdown of one card, :data:`TEXT_TAG`, in TensorBoard's Text tab
(the callback adds it with ``SummaryWriter.add_text`` at its first export into a log folder).
It names the hooked layers and says what the scalars, the figures and the projector show, as
the callback's options write them (no section for what is switched off), and what a good
fidelity reads, from the values measured in ``docs/performance.md`` (the digits CNN: about
0.95 after 160 steps, 0.99 after 640, 0.99 or more once finished).

Example:
    >>> import torch
    >>> from lightning_semvec.analysis.options import AnalysisOptions
    >>> text = reading_guide({"net.fc": torch.zeros(10, 8)}, AnalysisOptions())
    >>> text.splitlines()[0]
    '## How to read the semantic vectors (lightning_semvec)'
    >>> "net.fc (10 neurons)" in text, "### Projector" in text
    (True, True)
    >>> "### Images" in reading_guide({"net.fc": torch.zeros(10, 8)}, AnalysisOptions(figures=False))
    False
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.projector import DEFAULT_HISTORY

__all__ = ["TEXT_TAG", "reading_guide"]

#: The card's tag: the Text tab's ``semvec`` group.
TEXT_TAG = "semvec/how_to_read"
#: At most this many layers are named in the card's first line (then "and N more").
_NAMED_LAYERS = 8


def reading_guide(vectors: Mapping[str, Tensor], options: AnalysisOptions) -> str:
    """The card's Markdown for the layers ``vectors`` (``{layer: (N, d)}``, hooked order),
    as ``options`` write them."""
    named = [f"{name} ({v.shape[0]} neurons)" for name, v in list(vectors.items())[:_NAMED_LAYERS]]
    if len(vectors) > _NAMED_LAYERS:
        named.append(f"and {len(vectors) - _NAMED_LAYERS} more")
    every = options.log_every_n_epochs
    analysed = "validation epoch" if every == 1 else f"{every} validation epochs"
    lines = [
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
        f"their vectors' similarity; one point every {analysed}. Random vectors give 0, a "
        "perfect map 1. **Good: 0.9 or more.** On the package's digits CNN the vectors read "
        "about 0.25 to 0.5 after 40 steps, 0.95 after 160 and 0.99 after 640"
        + ("; at the end of `fit` they are finished to the best fit of the last validation "
           "pass (0.99 or more)" if options.finish_vectors else "")
        + ". Below 0.5 at the end: train longer or raise `dim`.",
        "- `semvec/<layer>/neighbour_agreement`: the share of each neuron's 5 nearest "
        "neighbours by activations that are also its nearest by vectors (random: about "
        "5 / (N - 1)).",
        "- `semvec/<layer>/align_loss` falls while the vectors learn; "
        "`semvec/<layer>/skipped_steps` counts steps skipped for NaN or Inf and stays 0.",
    ]
    schedule = options.figure_schedule
    if schedule is not None:
        when = ("after each analysed validation epoch" if schedule == "epoch"
                else "at the end of `fit`")
        lines += [
            "",
            f"### Images (IMAGES tab, {when})",
            "- `semvec/<layer>/similarity`: left the vectors' similarity, right the neurons' "
            "activation similarity on the validation data, in the same clustered order (red "
            "+1, blue -1). Blocks that show in both are groups of neurons the vectors got right.",
            "- `semvec/<layer>/pca`: one point per neuron, placed by its vector's first two "
            "principal components and coloured by the class that activates it most; a cross "
            "is a dead neuron (never active on the validation data).",
        ]
    if options.projector:
        picture = ("; its picture is the validation input that activates it most"
                   if options.images_per_neuron else "")
        lines += [
            "",
            "### Projector (PROJECTOR tab)",
            f"Each point is a **neuron**, not an input{picture}. Hover a point for its label "
            "(`layer #neuron: \"class\", selectivity`).",
            "",
            "- **Colour by preferred class in one click:** in the *Bookmarks* panel (bottom "
            "right), click the round button of *2-D PCA, coloured by preferred class* (or "
            "choose *Color by* → `preferred_class`). In 2-D the pictures are drawn at full "
            "size. Layers without class labels have no bookmark.",
            f"- The tensor menu (top left) lists `<layer>:<step>`: each layer's newest entry "
            f"and the {DEFAULT_HISTORY} newest earlier ones (older entries and their files are "
            "deleted). The one named `(latest) ...` is the newest export of the most telling "
            "of the widest layers, listed once more so that the projector opens on it. "
            "TensorBoard reads the menu when it starts: restart it to see later entries.",
        ]
    return "\n".join(lines) + "\n"
