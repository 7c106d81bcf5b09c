"""``EmbeddingModule``: the ``LightningModule`` whose validation passes stream a frozen model's
layers for :func:`lightning_semvec.embed_neurons`, and the vectors made from what they saw.

Each ``trainer.validate`` run is one pass over the data. The first streams every layer's
per-neuron statistics and, for a narrow layer, its exact ``N x N`` activation similarity
(the streamed metric of :class:`~lightning_semvec.metrics.SemanticFidelity`, which also scores
the result on the same data); a wide layer streams a randomized sketch
(:class:`~lightning_semvec.metrics.SketchedSimilarity`) in this pass and in each power pass
after it. Every metric's state is a sum, gathered at the end of a pass, so every process makes
the same vectors.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.data import sized_len
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.batches import labels_of_batch
from lightning_semvec.analysis.layer_analysis import LayerAnalysis, LayerResult
from lightning_semvec.analysis.options import LabelFn
from lightning_semvec.capture.layers import layer_name_of_key, module_dict_key
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.optimal_embedding import (
    eigen_initial_vectors,
    optimal_vectors,
    refine_vectors,
)
from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.metrics.similarity_sketch import SketchedSimilarity

__all__ = ["EmbeddingConfig", "EmbeddingModule", "default_input"]

#: Neurons of a wide layer whose in-sample fidelity is scored (a fixed random subset).
FIDELITY_SUBSET = 1024
#: Most activation values the per-neuron statistics take at once (32 MiB in float64).
CHUNK_ELEMENTS = 1 << 22


def default_input(batch: Any) -> Any:
    """The model's input in a batch: ``batch[0]`` of a tuple or list, else the batch itself.

    Raises:
        SemvecValueError: for a dict batch, whose input only the caller can name.
    """
    if isinstance(batch, Mapping):
        keys = list(batch)[:6]
        raise SemvecValueError(
            f"The batches are dicts (keys {keys}), so which entry the model takes is not known: "
            f"pass input_fn, e.g. input_fn=lambda batch: batch[{keys[0] if keys else 'image'!r}] "
            "(or input_fn=lambda batch: batch for a model that takes the dict).")
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@dataclass(frozen=True)
class EmbeddingConfig:
    """How :class:`EmbeddingModule` streams and fits (see :func:`~lightning_semvec.embed_neurons`)."""

    dim: int
    similarity: SimilarityKind
    exact_max_neurons: int
    oversampling: int
    passes: int
    refine_steps: int
    seed: int
    num_classes: int | None
    label_fn: LabelFn | None
    input_fn: Callable[[Any], Any]


class EmbeddingModule(pl.LightningModule):
    """Runs ``model`` on each validation batch and streams the ``readouts``' layers.

    ``messages`` are the call's once-only messages
    (:func:`~lightning_semvec.embedding.neuron_embedding.embedding_messages`). The forward hooks
    that call :meth:`consume` belong to the caller (:func:`~lightning_semvec.embed_neurons`
    registers and removes them).
    """

    #: The function named in messages.
    who = "embed_neurons"

    def __init__(
        self, model: nn.Module, readouts: Mapping[str, NeuronReadout], config: EmbeddingConfig,
        messages: WarningCache,
    ) -> None:
        super().__init__()
        self.model = model
        self.readouts = dict(readouts)
        self.config = config
        self.messages = messages
        self.streaming = False  # the hooks stream only inside validation_step
        self._labels: Tensor | None = None
        self.pass_index = 0
        self.batches_seen = 0
        self._batches_before_pass = 0
        #: What the passes read (set by ``run_passes``): the empty-process check looks at it.
        self.data: Any = None
        self.analyses = nn.ModuleDict()  # the LayerAnalysis metrics, by escaped layer name
        self.sketches = nn.ModuleDict()
        self._analysis: dict[str, LayerAnalysis] = {}
        self.vectors: dict[str, Tensor] = {}
        self.results: dict[str, LayerResult] = {}
        self.unlearned: set[str] = set()  # layers of which fewer than 2 neurons vary: no vectors
        self.alive_counts: dict[str, int] = {}  # neurons that vary on the data, of each layer fitted

    @property
    def passes_needed(self) -> int:
        """Passes over the data: one, and the power passes when a layer is sketched."""
        return self.config.passes if len(self.sketches) else 1

    def forward(self, batch: Any) -> Any:
        return self.model(self.config.input_fn(batch))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.pass_index == 0:
            self._labels = labels_of_batch(batch, self.config.label_fn, self.config.num_classes,
                                           self.messages)
        self.streaming = True
        try:
            self(batch)
        finally:
            self.streaming, self._labels = False, None
        self.batches_seen += 1

    def consume(self, name: str, output: Any) -> None:
        """Stream one call's output of layer ``name`` (from its forward hook, while
        :attr:`streaming`). Read without a copy: the metrics are done with it before the
        forward goes on, so a later in-place op cannot change what they saw."""
        self.stream(name, self.readouts[name].read(output, name))

    def _sketch(self, key: str) -> SketchedSimilarity:
        return cast(SketchedSimilarity, self.sketches[key])  # ModuleDict is typed for any Module

    def stream(self, name: str, activations: Tensor) -> None:
        """Stream one batch's ``(M, N)`` activations of layer ``name`` into its metrics."""
        if self.pass_index == 0:
            analysis = self._analysis.get(name) or self._create_layer(name, activations.shape[1])
            for rows, labels in _row_chunks(activations, self._labels):
                analysis.update(rows, labels, None, {})
        key = module_dict_key(name)
        if key in self.sketches:
            self._sketch(key).update(activations)

    def setup(self, stage: str) -> None:
        # Lightning raises "DataLoader within local rank has zero length" on that process alone,
        # and the others then wait in the first gather for as long as it lives: agree first.
        if self.trainer.world_size > 1:
            data = self.data
            if isinstance(data, pl.LightningDataModule):
                data = data.val_dataloader()
            length = sized_len(data) if data is not None else None
            self._agree_on_batches(-1 if length is None else length)

    def on_validation_epoch_start(self) -> None:
        self._batches_before_pass = self.batches_seen

    def _agree_on_batches(self, count: int) -> None:
        """Raise on every process, with one message, if any process has no batch to stream
        (one collective; ``count`` is ``-1`` where unknown)."""
        gathered = cast(Tensor, self.all_gather(torch.tensor(count, device=self.device)))
        counts = gathered.reshape(-1).tolist()
        empty = [rank for rank, n in enumerate(counts) if n == 0]
        if empty:
            raise SemvecValueError(
                f"{self.who}: the dataloader gave no batches on process(es) {empty} of "
                f"{len(counts)} (a rank's own data, or a sampler, left it empty): give every "
                "process at least one batch.")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # before any gather of the metrics: see setup
            self._agree_on_batches(self.batches_seen - self._batches_before_pass)
        last = self.pass_index + 1 >= self.passes_needed
        with warnings.catch_warnings():
            # A process that saw no batch still joins the gathers.
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            if self.pass_index == 0:
                for name, analysis in self._analysis.items():
                    if module_dict_key(name) not in self.sketches:
                        self.vectors[name] = self._exact_vectors(name, analysis)
            for key in self.sketches:
                sketch = self._sketch(key)
                if last:
                    self.vectors[layer_name_of_key(key)] = self._sketched_vectors(key, sketch)
                else:
                    test_matrix = sketch.power_test_matrix()
                    sketch.reset()
                    sketch.set_test_matrix(test_matrix)
            if last:
                for name, analysis in self._analysis.items():
                    self.results[name] = analysis.compute(
                        self.vectors[name], step=0, figures=False, figure_max_neurons=1)
        self.pass_index += 1

    # ------------------------------------------------------------------ internals
    def _create_layer(self, name: str, width: int) -> LayerAnalysis:
        config = self.config
        if width < 3:
            raise SemvecValueError(
                f"{self.who}: layer {name!r} has {width} neurons; a similarity between "
                "neurons needs at least 3: choose a wider layer.")
        exact = width <= config.exact_max_neurons
        analysis = LayerAnalysis.create(
            name, width, 0, self.device, num_classes=config.num_classes,
            similarity=config.similarity,
            fidelity_max_neurons=width if exact else min(width, FIDELITY_SUBSET),
            fidelity_k=min(5, width - 1), seed=config.seed, thumbnail_size=32,
        )
        self._analysis[name] = analysis
        self.analyses[module_dict_key(name)] = nn.ModuleList(
            [m for m in (analysis.statistics, analysis.fidelity) if m is not None])
        if not exact:
            rank = min(width, config.dim + config.oversampling)
            self.sketches[module_dict_key(name)] = SketchedSimilarity(
                width, rank, config.similarity, seed=config.seed).to(self.device)
        return analysis

    def _dim_for(self, name: str, alive: Tensor) -> int:
        count = self.alive_counts[name] = int(alive.sum())
        if count < self.config.dim:
            rank_zero_warn(
                f"{self.who}: layer {name!r} has {count} neurons that vary on the data, "
                f"fewer than dim={self.config.dim}; its vectors span {max(count, 1)} "
                "dimensions (the others are zero).")
        return max(1, min(self.config.dim, count))

    def _exact_vectors(self, name: str, analysis: LayerAnalysis) -> Tensor:
        assert analysis.fidelity is not None
        return self._fit_similarity(name, *analysis.fidelity.compute_similarity())

    def _fit_similarity(self, name: str, similarity: Tensor, alive: Tensor) -> Tensor:
        """The ``(N, d)`` vectors of layer ``name`` from its exact ``(N, N)`` similarity."""
        if int(alive.sum()) < 2:
            return self._no_vectors(name, similarity.shape[0])
        dim = self._dim_for(name, alive)
        vectors = optimal_vectors(similarity, alive, dim, self.config.refine_steps)
        return _padded(vectors, self.config.dim)

    def _sketched_vectors(self, key: str, sketch: SketchedSimilarity) -> Tensor:
        values, eigenvectors, alive = sketch.compute()
        name = layer_name_of_key(key)
        if int(alive.sum()) < 2:
            return self._no_vectors(name, sketch.num_neurons)
        dim = self._dim_for(name, alive)
        initial = eigen_initial_vectors(values, eigenvectors, dim, alive)
        factor = (eigenvectors * values.clamp_min(0.0).sqrt()).T.float()
        vectors = refine_vectors(initial, alive, factor=factor, steps=self.config.refine_steps)
        return _padded(vectors, self.config.dim)

    def _no_vectors(self, name: str, width: int) -> Tensor:
        rank_zero_warn(f"{self.who}: fewer than 2 neurons of layer {name!r} vary on the data; "
                       "its vectors are all zero, and the knowledge marks it learned=False.")
        self.unlearned.add(name)
        return torch.zeros(width, self.config.dim, device=self.device)


def _row_chunks(
    activations: Tensor, labels: Tensor | None
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Whole inputs' rows with their labels, at most :data:`CHUNK_ELEMENTS` values at a time:
    the statistics work in float64, and a wide layer's batch would double in memory."""
    rows, width = activations.shape
    batch = labels.shape[0] if labels is not None else 0
    per_input = rows // batch if batch and rows % batch == 0 else 0
    if not per_input:  # unlabelled (or rows that are not whole inputs): rows alone
        step = max(1, CHUNK_ELEMENTS // width)
        for start in range(0, rows, step):
            yield activations[start : start + step], labels
        return
    assert labels is not None  # per_input > 0 needs a batch of labels
    step = max(1, CHUNK_ELEMENTS // (width * per_input))
    for start in range(0, batch, step):
        yield (activations[start * per_input : (start + step) * per_input], labels[start : start + step])


def _padded(vectors: Tensor, dim: int) -> Tensor:
    if vectors.shape[1] == dim:
        return vectors
    return torch.cat([vectors, vectors.new_zeros(vectors.shape[0], dim - vectors.shape[1])], dim=1)

