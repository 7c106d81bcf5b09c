"""``embed_neurons``: semantic vectors for any trained model, at the optimum, after the fact."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.strategies.launchers.multiprocessing import (
    _MultiProcessingLauncher,
)
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_semvec._utils.checks import DIM_HINT, check_callable, check_choice, check_int
from lightning_semvec._utils.model_guard import preserved_model
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.options import LabelFn
from lightning_semvec.capture.hooks import ForwardHookManager, LayerHook
from lightning_semvec.capture.knowledge import knowledge_of_readouts, model_class_path
from lightning_semvec.capture.layers import LayerSpec, resolve_layers
from lightning_semvec.capture.readout import (
    NeuronReadout,
    OutputSelector,
    Reduction,
    layer_readouts,
)
from lightning_semvec.embedding._pass import (
    EmbeddingConfig,
    EmbeddingModule,
    default_input,
)
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.alignment import DENSE_MAX_NEURONS
from lightning_semvec.functional.optimal_embedding import DEFAULT_REFINE_STEPS
from lightning_semvec.functional.similarity import SIMILARITY_KINDS, SimilarityKind
from lightning_semvec.knowledge import StaticKnowledge

__all__ = ["embed_neurons", "embedding_config", "embedding_messages", "run_passes", "trainer_of",
           "trivial_fidelity_note"]

#: Trainer options of the passes unless the caller sets them: no logs, files or bars.
TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
    "enable_model_summary": False, "devices": 1,
}


def trivial_fidelity_note(dim: int, alive: int | None) -> str:
    """What to add to an in-sample fidelity that says nothing: with ``dim`` at least the
    ``alive`` neurons that vary, the vectors can hold their similarity exactly (it has rank at
    most ``alive``), so the fidelity is 1 whatever the neurons do.

    Example:
        >>> trivial_fidelity_note(16, 10)[:58]
        ' (trivially 1: dim=16 is at least its 10 neurons that vary'
        >>> trivial_fidelity_note(4, 10)
        ''
    """
    if alive is None or alive < 3 or dim < alive:
        return ""
    return (f" (trivially 1: dim={dim} is at least its {alive} neurons that vary, so the vectors "
            f"can hold their similarity exactly; a dim below {alive}, such as {max(2, alive // 2)}, "
            "says how well a few dimensions describe them)")


def embed_neurons(
    model: nn.Module,
    dataloader: Iterable[Any] | pl.LightningDataModule,
    layers: LayerSpec | Sequence[LayerSpec],
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
    training_steps: int = 0,
) -> StaticKnowledge:
    """Semantic vectors of a trained model's neurons, the best fit of its activation similarity.

    The data is streamed through the frozen model in eval mode (``trainer.validate`` passes, so
    devices, several processes and mixed precision are Lightning's). Each layer's activation
    similarity ``S`` over all the data is accumulated exactly (``N x N``, for layers of up to
    ``exact_max_neurons``) or, for wider ones, as a randomized sketch in ``O(N (d + p))``
    memory; the vectors start from its top ``d`` eigenvectors (scaled, rows normalised) and are
    refined on the alignment loss (``docs/method.md``, "The best the vectors can do"). Every
    process returns the same knowledge. ``model`` is left exactly as it was: weights, the
    training flag of every submodule, devices and hooks, also when a pass raises.

    Args:
        model: any trained ``nn.Module`` or ``LightningModule``.
        dataloader: the data (a ``DataLoader`` or anything ``trainer.validate`` takes as
            ``dataloaders``), or a ``LightningDataModule`` (its ``val_dataloader``). It should
            give the same samples on every pass (no shuffling or random augmentation).
        layers: module names, glob patterns or modules, relative to ``model``, as for
            :class:`~lightning_semvec.SemanticVectorCallback`.
        dim: ``d``, the length of each vector.
        similarity, reduction, neuron_dim, select_output, layer_options: as for
            :class:`~lightning_semvec.SemanticVectorCallback`.
        refine_steps: L-BFGS iterations from the eigen start (0: the eigen start itself).
        exact_max_neurons: wider layers are sketched instead of accumulated exactly.
        oversampling: ``p``, extra sketch columns of wide layers (default ``d + 8``).
        passes: passes over the data when a layer is sketched (the first and its power
            passes; 2 is much closer to exact than 1); narrow layers need one.
        seed: seeds the sketch and the wide layers' fidelity subset.
        num_classes, class_names, label_fn: for class statistics (``batch[1]`` holds the
            labels unless ``label_fn`` picks them); without a number of classes there are none.
        input_fn: ``batch -> model input`` (default: ``batch[0]`` of a tuple or list, else the
            batch).
        trainer: a ``pl.Trainer`` to run the passes, or keyword arguments for one (defaults:
            one device, no logger, checkpoints or progress bar). Spawning strategies
            (``"ddp_spawn"``, notebooks) cannot return the vectors: use ``"ddp"``.
        training_steps: recorded in the knowledge (how long the model had trained).

    Returns:
        :class:`~lightning_semvec.StaticKnowledge`: ``(N, d)`` vectors per layer with their
        readout metadata and per-neuron statistics (``extra`` holds the in-sample fidelity).

    Raises:
        SemvecValueError: an unknown layer, ``dim < 1``, a layer of fewer than 3 neurons, a
            dataloader without batches, a spawning strategy or a ``"*-true"`` precision.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=16)
        >>> knowledge = embed_neurons(net, data, layers=["0", "2"], dim=3)
        >>> knowledge["0"].vectors.shape, knowledge["2"].vectors.shape
        (torch.Size([8, 3]), torch.Size([3, 3]))
    """
    if not isinstance(model, nn.Module):
        raise SemvecTypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    config = embedding_config(
        dim=dim, similarity=similarity, exact_max_neurons=exact_max_neurons,
        oversampling=oversampling, passes=passes, refine_steps=refine_steps, seed=seed,
        num_classes=num_classes, class_names=class_names, label_fn=label_fn, input_fn=input_fn)
    check_int("training_steps", training_steps, 0)
    modules = resolve_layers(model, layers)
    default = NeuronReadout(reduction, neuron_dim, select_output)
    readouts = layer_readouts(modules, default, layer_options or {})
    runner = trainer_of(trainer, "embed_neurons")
    wrapper = EmbeddingModule(model, readouts, config, embedding_messages("embed_neurons"))
    with preserved_model(model), ForwardHookManager(who="embed_neurons") as hooks:
        for name, module in modules.items():
            hooks.add(name, module, _hook(wrapper))
        run_passes(wrapper, runner, dataloader, "embed_neurons",
                   lambda: _check_widths(wrapper, modules))
        wrapper.model = nn.Identity()  # the wrapper must not keep the model alive
    for name, result in wrapper.results.items():
        if result.fidelity is not None:
            rank_zero_info(f"embed_neurons: {name}: in-sample fidelity (Spearman) "
                           f"{result.fidelity['spearman']:.4f}"
                           f"{trivial_fidelity_note(config.dim, wrapper.alive_counts.get(name))}")
    return knowledge_of_readouts(
        {name: wrapper.vectors[name].cpu() for name in modules}, readouts,
        similarity=config.similarity,
        statistics={n: r.statistics for n, r in wrapper.results.items() if r.statistics},
        source_model=model_class_path(model),
        training_steps=training_steps,
        class_names=class_names,
        extra={"embedded": "post hoc (embed_neurons)", **{
            f"fidelity/{n}": f"{r.fidelity['spearman']:.6f}"
            for n, r in wrapper.results.items() if r.fidelity is not None}},
        unlearned=wrapper.unlearned,
    )


def embedding_config(
    *,
    dim: int,
    similarity: SimilarityKind,
    exact_max_neurons: int,
    oversampling: int | None,
    passes: int,
    refine_steps: int,
    seed: int,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    label_fn: LabelFn | None,
    input_fn: Callable[[Any], Any] | None,
) -> EmbeddingConfig:
    """The checked :class:`EmbeddingConfig` of ``embed_neurons``-style arguments."""
    # Checked here, before any pass: a bad number of classes or names would otherwise fail
    # only after the whole data had gone through the model, in a message naming the callback.
    if num_classes is not None:
        check_int("num_classes", num_classes, 1, hint="(the number of label values), or None.")
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise SemvecTypeError(
                f"class_names must be a list of strings, one per class, got {class_names!r}.")
        if num_classes is not None and len(class_names) != num_classes:
            raise SemvecValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}: give "
                "one name per class (or only one of the two).")
    return EmbeddingConfig(
        dim=check_int("dim", dim, 2, hint=DIM_HINT),
        similarity=check_choice("similarity", similarity, SIMILARITY_KINDS),
        exact_max_neurons=check_int("exact_max_neurons", exact_max_neurons, 3),
        oversampling=check_int("oversampling", dim + 8 if oversampling is None else oversampling, 0),
        passes=check_int("passes", passes, 1),
        refine_steps=check_int("refine_steps", refine_steps, 0),
        seed=check_int("seed", seed),
        num_classes=len(class_names) if num_classes is None and class_names else num_classes,
        label_fn=label_fn and check_callable(
            "label_fn", label_fn, "a callable taking a batch and returning its (B,) labels"),
        input_fn=default_input if input_fn is None else check_callable(
            "input_fn", input_fn, "a callable taking a batch and returning the model's input"),
    )


def embedding_messages(who: str) -> WarningCache:
    """The once-only messages of one embedding call named ``who``: the notes of the analysis
    helpers it shares with the callback are warnings here, and unlabelled data (fine for an
    embedding) is not remarked on."""
    return WarningCache(who, notes="warn", muted=("no-labels",))


def run_passes(
    wrapper: EmbeddingModule,
    runner: pl.Trainer,
    dataloader: Iterable[Any] | pl.LightningDataModule,
    who: str,
    after_pass: Callable[[], None],
) -> None:
    """The ``trainer.validate`` passes ``wrapper`` needs over the data, ``after_pass`` after each.

    Raises:
        SemvecValueError: a pass that gave no batch.
    """
    datamodule = dataloader if isinstance(dataloader, pl.LightningDataModule) else None
    wrapper.data = dataloader
    while wrapper.pass_index < wrapper.passes_needed:
        before = wrapper.batches_seen
        if datamodule is not None:
            runner.validate(wrapper, datamodule=datamodule, verbose=False)
        else:
            runner.validate(wrapper, dataloaders=dataloader, verbose=False)
        if wrapper.batches_seen == before:
            raise SemvecValueError(
                f"{who}: the dataloader gave no batches (is it empty, or "
                "limit_val_batches=0?): pass data with at least one batch.")
        after_pass()


def _hook(wrapper: EmbeddingModule) -> LayerHook:
    def hook(name: str, output: Any, call: int) -> None:
        if wrapper.streaming:
            wrapper.consume(name, output)

    return hook


def _check_widths(wrapper: EmbeddingModule, modules: Mapping[str, nn.Module]) -> None:
    missing = [name for name in modules if name not in wrapper.vectors and wrapper.pass_index
               >= wrapper.passes_needed]
    if missing:
        raise SemvecValueError(
            f"embed_neurons: layers {missing} were never called in the model's forward: choose "
            "layers the forward runs (see model.named_modules()).")


def trainer_of(trainer: pl.Trainer | Mapping[str, Any] | None, who: str) -> pl.Trainer:
    """The ``pl.Trainer`` of the passes: ``trainer`` itself, or one built from its arguments
    over :data:`TRAINER_DEFAULTS`; spawning strategies and ``"*-true"`` precisions refused."""
    if isinstance(trainer, pl.Trainer):
        runner = trainer
    elif trainer is None or isinstance(trainer, Mapping):
        runner = pl.Trainer(**{**TRAINER_DEFAULTS, **dict(trainer or {})})
    else:
        raise SemvecTypeError(
            f"trainer must be a lightning.pytorch.Trainer, a dict of its arguments or None, got "
            f"{type(trainer).__name__}.")
    if isinstance(runner.strategy.launcher, _MultiProcessingLauncher):
        raise SemvecValueError(
            f"{who} cannot use the spawning strategy {type(runner.strategy).__name__} "
            "(its processes cannot return the vectors): use strategy='ddp' in a script, or one "
            "device.")
    precision = str(runner.precision)
    if precision.endswith("-true") and precision != "32-true":
        raise SemvecValueError(
            f"precision={precision!r} converts the model's weights: use "
            f"'{precision.split('-')[0]}-mixed' (autocast leaves the weights as they are).")
    return runner
