"""``embed_models``: the neurons of several trained models in one space."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_semvec._utils.model_guard import preserved_model
from lightning_semvec.analysis.options import LabelFn
from lightning_semvec.capture.hooks import LayerHook
from lightning_semvec.capture.knowledge import knowledge_of_readouts, model_class_path
from lightning_semvec.capture.layers import LayerSpec, resolve_layers
from lightning_semvec.capture.readout import (
    NeuronReadout,
    OutputSelector,
    Reduction,
    layer_readouts,
)
from lightning_semvec.embedding._joint_pass import JOINT_LAYER, CkaFeatures, JointEmbeddingModule
from lightning_semvec.embedding.neuron_embedding import (
    embedding_config,
    embedding_messages,
    run_passes,
    trainer_of,
    trivial_fidelity_note,
)
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.alignment import DENSE_MAX_NEURONS
from lightning_semvec.functional.neuron_matching import match_neurons
from lightning_semvec.functional.optimal_embedding import DEFAULT_REFINE_STEPS
from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.knowledge import NEURON_STATISTICS, StaticKnowledge
from lightning_semvec.knowledge.joint_space import (
    CKA_FEATURES,
    CKA_KEY,
    MODELS_KEY,
    SEPARATOR,
    cka_record,
    joint_layer_name,
    matching_key,
    matching_record,
)

__all__ = ["embed_models"]

Layers = LayerSpec | Sequence[LayerSpec]


def embed_models(
    models: Mapping[str, nn.Module],
    dataloader: Iterable[Any] | pl.LightningDataModule,
    layers: Layers | Mapping[str, Layers],
    dim: int = 16,
    *,
    similarity: SimilarityKind = "pearson",
    reduction: Reduction = "mean",
    neuron_dim: int = 1,
    select_output: OutputSelector = None,
    layer_options: Mapping[str, Mapping[str, Any]] | None = None,
    refine_steps: int = DEFAULT_REFINE_STEPS,
    exact_max_neurons: int = DENSE_MAX_NEURONS,
    oversampling: int | None = None,
    passes: int = 2,
    seed: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_fn: LabelFn | None = None,
    input_fn: Callable[[Any], Any] | None = None,
    trainer: pl.Trainer | Mapping[str, Any] | None = None,
    cka: CkaFeatures | None = "flattened",
) -> StaticKnowledge:
    """Semantic vectors of several trained models' neurons in one space, from the same inputs.

    Every batch goes through every model (frozen, in eval mode, one ``trainer.validate`` loop);
    the chosen layers' activations of all models, side by side, give one joint activation
    similarity over all their neurons, and one set of vectors is fitted to it as
    :func:`~lightning_semvec.embed_neurons` fits a layer's (exact ``N x N`` up to
    ``exact_max_neurons`` neurons in all, else the randomized sketch; eigen start, then
    refinement). Neurons of different models that rise and fall together on the data get
    similar vectors, so a neuron's nearest neuron of another model is the one that plays its
    role there (:func:`~lightning_semvec.functional.match_neurons`). The same batches give the
    linear CKA (Kornblith et al., 2019) between every pair of chosen layers, within each model
    and across models, with the unbiased minibatch estimator (Nguyen et al., 2021) of
    :class:`~lightning_semvec.metrics.LinearCKA`: no pass more over the data. Every model is
    left exactly as it was.

    Args:
        models: ``{name: model}``, at least two (a teacher and its student, two seeds of one
            architecture; the same object twice is allowed). Names are non-empty and hold no
            ``"/"``: they prefix the layer names.
        dataloader: the inputs, as for :func:`~lightning_semvec.embed_neurons`; every model
            gets the same ``input_fn(batch)``.
        layers: ``{name: layer specs}`` naming each model's layers (relative to that model),
            or one spec list used for every model (models of one architecture).
        dim: ``d``, the length of each vector.
        similarity, reduction, neuron_dim, select_output: as for
            :func:`~lightning_semvec.embed_neurons`; every layer must give one row per input
            (or the same rows: ``"positions"`` only for layers of one spatial size).
        layer_options: per-layer readout options keyed by joint layer name or pattern
            (``{"student/net.features.*": {"reduction": "mean"}}``).
        exact_max_neurons: as for :func:`~lightning_semvec.embed_neurons`, counting the
            neurons of all the models together.
        refine_steps, oversampling, passes, seed: as for :func:`~lightning_semvec.embed_neurons`.
        num_classes, class_names, label_fn, input_fn, trainer: as for
            :func:`~lightning_semvec.embed_neurons`.
        cka: what the linear CKA between the layers compares: ``"flattened"`` (default) each
            layer's whole output per input, flattened (``(M, C*H*W)`` for a conv layer, as
            Kornblith et al. and ``torch_cka`` do); ``"readout"`` the neurons as read for the
            joint space (``(M, C)``, a conv layer's channel means with the default
            ``reduction``); ``None``: no CKA.

    Returns:
        :class:`~lightning_semvec.StaticKnowledge` with layers named ``"<model>/<layer>"``,
        ``(N, d)`` vectors each, all in one space, with per-neuron statistics. ``extra`` holds
        the model names (``"joint/models"``, JSON), the in-sample fidelity of the joint space
        (``"fidelity/joint"``) and, for the first model and each other one, the activation
        correlation of every neuron with its best match (``"joint/matching/<a>/<b>"``, when
        the similarity is exact), and the ``(L, L)`` CKA between all ``L`` layers
        (``"joint/cka"``, read with :func:`~lightning_semvec.knowledge.joint_space.stored_cka`;
        absent with ``cka=None`` or when no batch had 4 inputs).
        :func:`~lightning_semvec.write_report` adds a "Matching" section for it.

    Note:
        The CKA is averaged over minibatches, each batch's rows (split above 512 rows): it
        depends on the batch size, as every minibatch CKA does; use batches of 32 inputs or
        more, and the same batch size for results you compare. Under DDP every process gets
        the CKA of all processes' batches. ``"flattened"`` keeps a copy of every chosen
        layer's output of a batch in the first pass (``"readout"`` only its neurons'), and
        each minibatch costs ``rows^2`` times the layer's features in its Gram.

    Raises:
        SemvecTypeError: ``models`` not a mapping of modules, ``layers`` of another type.
        SemvecValueError: fewer than two models, a name that is empty or holds ``"/"``, layers
            that name other models than ``models`` or a layer a model does not have, layers
            that give different rows per input (or, for ``cka="flattened"``, outputs of
            different numbers of samples), ``cka`` not one of ``"flattened"``, ``"readout"``,
            ``None``, and the errors of :func:`~lightning_semvec.embed_neurons`.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> a = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        >>> b = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        >>> data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=16)
        >>> knowledge = embed_models({"a": a, "b": b}, data, layers=["1", "2"], dim=3)
        >>> knowledge.layer_names
        ['a/1', 'a/2', 'b/1', 'b/2']
        >>> knowledge["b/1"].vectors.shape
        torch.Size([5, 3])
        >>> from lightning_semvec.knowledge.joint_space import stored_cka
        >>> stored_cka(knowledge).block(["a/1", "a/2"], ["b/1", "b/2"]).shape
        torch.Size([2, 2])
    """
    models = _checked_models(models)
    if cka is not None and cka not in CKA_FEATURES:
        raise SemvecValueError(
            f"cka must be one of {', '.join(map(repr, CKA_FEATURES))} or None, got {cka!r}: "
            "'flattened' compares whole layer outputs, 'readout' the neurons as read.")
    config = embedding_config(
        dim=dim, similarity=similarity, exact_max_neurons=exact_max_neurons,
        oversampling=oversampling, passes=passes, refine_steps=refine_steps, seed=seed,
        num_classes=num_classes, class_names=class_names, label_fn=label_fn, input_fn=input_fn)
    chosen = _chosen_layers(models, layers)  # {joint name: (model name, module)}
    default = NeuronReadout(reduction, neuron_dim, select_output)
    readouts = layer_readouts({name: module for name, (_, module) in chosen.items()}, default,
                              layer_options or {})
    owners = {name: model for name, (model, _) in chosen.items()}
    runner = trainer_of(trainer, "embed_models")
    wrapper = JointEmbeddingModule(models, readouts, owners, config,
                                   embedding_messages("embed_models"), cka)
    with ExitStack() as stack:
        for model in models.values():
            stack.enter_context(preserved_model(model))
        hooks = stack.enter_context(wrapper.hooks)
        for name, (model_name, module) in chosen.items():
            hooks.add(name, module, _hook(wrapper, model_name))
        run_passes(wrapper, runner, dataloader, "embed_models", lambda: None)
        wrapper.model = nn.Identity()  # the wrapper must not keep the models alive
    return _knowledge(wrapper, models, readouts, owners, config.similarity, class_names)


def _checked_models(models: Any) -> dict[str, nn.Module]:
    if not isinstance(models, Mapping):
        raise SemvecTypeError(
            f"models must be a dict {{name: nn.Module}}, e.g. {{'teacher': teacher, 'student': "
            f"student}}, got {type(models).__name__}.")
    if len(models) < 2:
        raise SemvecValueError(
            f"embed_models needs at least two models to put in one space, got {len(models)}: "
            "for one model use embed_neurons.")
    for name, model in models.items():
        if not isinstance(name, str) or not name or SEPARATOR in name:
            raise SemvecValueError(
                f"Model name {name!r} cannot prefix layer names: use a non-empty string without "
                f"{SEPARATOR!r} (e.g. 'teacher').")
        if not isinstance(model, nn.Module):
            raise SemvecTypeError(
                f"models[{name!r}] must be an nn.Module, got {type(model).__name__}.")
    return dict(models)


def _chosen_layers(
    models: Mapping[str, nn.Module], layers: Layers | Mapping[str, Layers]
) -> dict[str, tuple[str, nn.Module]]:
    """``{joint layer name: (model name, module)}``, grouped by model in the models' order."""
    if isinstance(layers, Mapping):
        missing = [name for name in models if name not in layers]
        unknown = [name for name in layers if name not in models]
        if missing or unknown:
            raise SemvecValueError(
                f"layers must name the layers of every model and no other: missing {missing}, "
                f"unknown {unknown} (models: {list(models)}); or pass one list for all models.")
        per_model = dict(layers)
    elif isinstance(layers, (str, nn.Module, Sequence)):
        per_model = {name: layers for name in models}
    else:
        raise SemvecTypeError(
            "layers must be {model name: layer names or patterns}, or one list of them for "
            f"every model, got {type(layers).__name__}.")
    chosen = {}
    for model_name, model in models.items():
        try:
            modules = resolve_layers(model, per_model[model_name])
        except (SemvecValueError, SemvecTypeError) as err:
            raise type(err)(f"embed_models, model {model_name!r}: {err}") from err
        for layer, module in modules.items():
            chosen[joint_layer_name(model_name, layer)] = (model_name, module)
    return chosen


def _hook(wrapper: JointEmbeddingModule, model_name: str) -> LayerHook:
    def hook(layer: str, output: Any, call: int) -> None:
        wrapper.capture(model_name, layer, output)

    return hook


def _knowledge(
    wrapper: JointEmbeddingModule,
    models: Mapping[str, nn.Module],
    readouts: Mapping[str, NeuronReadout],
    owners: Mapping[str, str],
    similarity: SimilarityKind,
    class_names: Sequence[str] | None,
) -> StaticKnowledge:
    """The joint knowledge: the joint layer's vectors and statistics cut back into layers."""
    bounds, start = {}, 0
    for name in readouts:
        bounds[name] = (start, start + wrapper.widths[name])
        start += wrapper.widths[name]
    joint = wrapper.vectors[JOINT_LAYER].cpu()
    result = wrapper.results[JOINT_LAYER]
    vectors = {name: joint[a:b] for name, (a, b) in bounds.items()}
    statistics = {name: _cut_statistics(result.statistics, a, b)
                  for name, (a, b) in bounds.items()} if result.statistics else {}
    extra = {"embedded": "jointly (embed_models)", MODELS_KEY: json.dumps(list(models))}
    if result.fidelity is not None:
        extra["fidelity/joint"] = f"{result.fidelity['spearman']:.6f}"
        rank_zero_info(f"embed_models: in-sample fidelity (Spearman) of the joint space "
                       f"{result.fidelity['spearman']:.4f}"
                       f"{trivial_fidelity_note(wrapper.config.dim, wrapper.alive_counts.get(JOINT_LAYER))}")
    first, *others = models
    spans = {m: [bounds[n] for n in readouts if owners[n] == m] for m in models}
    for other in others:
        rows, columns = _indices(spans[first]), _indices(spans[other])
        cross = (None if wrapper.similarity is None
                 else wrapper.similarity[0][rows][:, columns])
        matching = match_neurons(joint[rows], joint[columns], cross)
        extra[matching_key(first, other)] = matching_record(matching)
    if wrapper.cka_matrix is not None:
        extra[CKA_KEY] = cka_record(list(readouts), wrapper.cka_matrix, wrapper.cka_minibatches,
                                    wrapper.cka_features or "flattened")
    return knowledge_of_readouts(
        vectors, readouts, similarity=similarity, statistics=statistics,
        source_model="; ".join(f"{name}: {model_class_path(m)}" for name, m in models.items()),
        class_names=class_names, extra=extra,
    )


def _indices(spans: list[tuple[int, int]]) -> Tensor:
    return torch.cat([torch.arange(a, b) for a, b in spans])


def _cut_statistics(statistics: Mapping[str, Tensor], start: int, stop: int) -> dict[str, Tensor]:
    """One layer's share of the joint layer's statistics (class counts are everyone's)."""
    cut = {}
    for key, value in statistics.items():
        shape = NEURON_STATISTICS.get(key, (None, ""))[1]
        if shape == "N":
            cut[key] = value[start:stop]
        elif shape == "CxN":
            cut[key] = value[:, start:stop]
        elif shape == "C":
            cut[key] = value
    return cut
