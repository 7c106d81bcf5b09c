"""The metrics one layer streams over one analysed validation epoch, and what they found.

Example:
    >>> import torch
    >>> analysis = LayerAnalysis.create("fc", num_neurons=5, images_per_neuron=0,
    ...     device=torch.device("cpu"), num_classes=3, similarity="pearson",
    ...     fidelity_max_neurons=2048, fidelity_k=2, seed=0, thumbnail_size=32)
    >>> analysis.update(torch.randn(4, 5), torch.tensor([0, 1, 2, 1]), None, {})
    >>> result = analysis.compute(torch.randn(5, 2), step=7, figures=False,
    ...     figure_max_neurons=128)
    >>> sorted(result.fidelity), result.statistics["class_counts"].tolist()
    (['neighbour_agreement', 'spearman'], [1.0, 2.0, 1.0])
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.metrics import (
    NeuronActivationStatistics,
    SemanticFidelity,
    TopActivatingInputs,
)
from lightning_semvec.projector import sprite_thumbnail_size, to_thumbnails

__all__ = ["LayerAnalysis", "LayerResult"]

_CLASS_STATISTICS = ("class_means", "class_counts", "selectivity", "preferred_class")


@dataclass
class LayerResult:
    """What one analysed validation epoch found for one layer (CPU tensors)."""

    name: str
    step: int
    statistics: dict[str, Tensor]
    fidelity: dict[str, float] | None
    similarity_ids: Tensor | None  # (n,) neurons shown in the heatmap
    activation_similarity: Tensor | None  # (n, n)
    thumbnails: Tensor | None  # (N, k, 3, t, t) uint8
    # (S (N, N), alive (N,)) of every neuron, when asked for and the layer is fully tracked
    full_similarity: tuple[Tensor, Tensor] | None = None


class LayerAnalysis:
    """The metrics one layer streams over one validation epoch."""

    def __init__(
        self,
        name: str,
        statistics: NeuronActivationStatistics,
        fidelity: SemanticFidelity | None,
        top: TopActivatingInputs | None,
        labelled: bool,
    ) -> None:
        self.name = name
        self.statistics = statistics
        self.fidelity = fidelity
        self.top = top
        self.labelled = labelled  # class statistics are reported only if every batch had labels
        self.images_seen = False

    @classmethod
    def create(
        cls,
        name: str,
        num_neurons: int,
        images_per_neuron: int,
        device: torch.device,
        *,
        num_classes: int | None,
        similarity: SimilarityKind,
        fidelity_max_neurons: int,
        fidelity_k: int,
        seed: int,
        thumbnail_size: int,
    ) -> LayerAnalysis:
        """The metrics of a layer of ``num_neurons`` neurons, on ``device``.

        Layers with fewer than 3 neurons get no fidelity; ``images_per_neuron=0`` keeps no
        top-activating inputs. Class statistics need ``num_classes``.
        """
        # Labels are range-checked once per batch (labels_of_batch), not once per layer here.
        statistics = NeuronActivationStatistics(
            num_neurons, num_classes or 2, validate_args=False
        ).to(device)
        fidelity = None
        if num_neurons >= 3:
            tracked = min(num_neurons, fidelity_max_neurons)
            fidelity = SemanticFidelity(
                num_neurons,
                similarity=similarity,
                max_neurons=fidelity_max_neurons,
                k=min(fidelity_k, tracked - 1),
                seed=seed,
            ).to(device)
        top = None
        if images_per_neuron:
            size = sprite_thumbnail_size(num_neurons, images_per_neuron, thumbnail_size)
            top = TopActivatingInputs(num_neurons, images_per_neuron, size).to(device)
        return cls(name, statistics, fidelity, top, labelled=num_classes is not None)

    def update(
        self,
        activations: Tensor,
        labels: Tensor | None,
        images: Tensor | None,
        thumbnails: dict[int, Tensor],
    ) -> None:
        """One captured ``(M, N)`` chunk; ``M`` is ``B`` or ``B * positions`` when aligned.

        ``thumbnails`` caches the batch's thumbnails by size, shared by the layers.
        """
        device = self.statistics.sums.device
        acts = activations.to(device)
        if self.fidelity is not None:
            self.fidelity.update(acts)
        batch = labels.shape[0] if labels is not None else (
            images.shape[0] if images is not None else 0
        )
        per_input = acts.shape[0] // batch if batch and acts.shape[0] % batch == 0 else 0
        if labels is not None and per_input and self.labelled:
            row_labels = labels.to(device=device, dtype=torch.long)
            if per_input > 1:
                row_labels = row_labels.repeat_interleave(per_input)
        else:
            self.labelled = False
            row_labels = torch.zeros(acts.shape[0], dtype=torch.long, device=device)
        self.statistics.update(acts, row_labels)
        if self.top is not None and images is not None and per_input and images.shape[0] == batch:
            per_image = acts if per_input == 1 else acts.view(batch, per_input, -1).mean(dim=1)
            size = self.top.size
            if size not in thumbnails:
                thumbnails[size] = to_thumbnails(images, size)
            self.top.update(per_image, thumbnails[size])
            self.images_seen = True

    def compute(
        self, vectors: Tensor, step: int, *, figures: bool, figure_max_neurons: int,
        keep_similarity: bool = False,
    ) -> LayerResult:
        """Compute every metric; each gathers across processes, so every process calls this.

        ``vectors`` are the layer's ``(N, d)`` semantic vectors; with ``figures`` the result
        keeps the activation similarity of at most ``figure_max_neurons`` neurons for the
        heatmap, and with ``keep_similarity`` the whole ``(N, N)`` similarity when every neuron
        is tracked (to finish the vectors at the end of ``fit``).
        """
        with warnings.catch_warnings():
            # A process that saw no validation batch still joins the gathers.
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            statistics = {k: v.detach().cpu() for k, v in self.statistics.compute().items()}
            if not self.labelled:
                statistics = {k: v for k, v in statistics.items() if k not in _CLASS_STATISTICS}
            fidelity = ids = s_act = full = None
            if self.fidelity is not None:
                keep = keep_similarity and self.fidelity.num_tracked == self.fidelity.num_neurons
                # One gather of the similarity serves both the finishing and the heatmap.
                similarity, alive = (self.fidelity.compute_similarity() if keep or figures
                                     else (None, None))
                if keep:
                    assert similarity is not None and alive is not None
                    full = (similarity.cpu(), alive.cpu())
                self.fidelity.set_vectors(vectors.detach())
                fidelity = {k: float(v) for k, v in self.fidelity.compute().items()}
                if figures:
                    from lightning_semvec._utils.indices import evenly_spaced

                    assert similarity is not None
                    tracked = self.fidelity.neuron_indices.cpu()
                    pick = evenly_spaced(tracked.numel(), figure_max_neurons)
                    ids, s_act = tracked[pick], similarity.cpu()[pick][:, pick]
            thumbnails = None
            if self.top is not None:
                top = self.top.compute()
                thumbnails = top["thumbnails"].cpu() if self.images_seen else None
        return LayerResult(self.name, step, statistics, fidelity, ids, s_act, thumbnails, full)
