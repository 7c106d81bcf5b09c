"""``semvec embed``: a knowledge file, a report and projector files for a model already trained.

The model is a Lightning checkpoint (rebuilt from its saved hyperparameters by its class,
:class:`~lightning_semvec.models.ImageClassifier` unless ``--model_class`` names another) or a
torchvision model name with a state-dict file of the user's; ``--compare`` names a second one,
embedded with the first in one space. The data is an image folder
(``torchvision.datasets.ImageFolder``: one sub-folder per class) or a ``LightningDataModule``,
by short name (``digits``, ``glyphs``, ``mnist``, ``cifar10``, ``cifar100``) or import path. Nothing is
downloaded unless a data module is told to.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.files import check_output_folder, staged_folder
from lightning_semvec.callback.checkpoint import load_checkpoint
from lightning_semvec.cli._data_names import DATA_MODULES
from lightning_semvec.embedding.joint_embedding import embed_models
from lightning_semvec.embedding.neuron_embedding import embed_neurons
from lightning_semvec.errors import SemvecFileNotFoundError, SemvecValueError
from lightning_semvec.knowledge import KNOWLEDGE_SUFFIX, StaticKnowledge
from lightning_semvec.projector import neuron_metadata, write_embedding
from lightning_semvec.projector.joint import write_joint_projector
from lightning_semvec.report.html import write_report

__all__ = ["DATA_MODULES", "embed_model"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def embed_model(
    model: str,
    data: str,
    layers: str,
    out_dir: str,
    dim: int = 16,
    weights: str | None = None,
    model_class: str = "lightning_semvec.models.ImageClassifier",
    num_classes: int = 1000,
    split: Literal["train", "val", "test"] = "train",
    image_size: int = 224,
    channels: Literal[1, 3] = 3,
    normalize: Literal["auto", "imagenet", "none"] = "auto",
    batch_size: int = 64,
    accelerator: str = "auto",
    precision: str = "32-true",
    trust_checkpoint: bool = False,
    compare: str | None = None,
    compare_weights: str | None = None,
    compare_layers: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Embed a trained model's neurons; write a knowledge file, a report and projector files.

    Args:
        model: a Lightning checkpoint (``.ckpt``), or a torchvision model name
            (``resnet18``, ``mobilenet_v3_small``, ...) whose weights ``--weights`` gives.
        data: an image folder (one sub-folder per class), or a data module: ``digits``, ``glyphs``,
            ``mnist``, ``cifar10``, ``cifar100`` or an import path such as
            ``my_package.MyDataModule`` (built with its defaults).
        layers: comma-separated layer names or glob patterns, as in
            ``model.named_modules()`` (``net.features.*,net.classifier.1``).
        out_dir: the folder to write: ``<name>.semvec.safetensors``, ``report/index.html`` and
            ``projector/`` (``tensorboard --logdir <out_dir>/projector``).
        dim: length of each semantic vector.
        weights: the state-dict file of a torchvision model (``torch.save(model.state_dict())``).
        model_class: the ``LightningModule`` class of a checkpoint, as an import path.
        num_classes: the number of outputs of a torchvision model.
        split: the data module's split to stream (train data gives the most samples).
        image_size: an image folder's images are resized and centre-cropped to this.
        channels: an image folder's images are read as RGB (3) or greyscale (1).
        normalize: ``imagenet`` normalises an image folder's images with ImageNet's mean and
            standard deviation (as torchvision's weights expect), ``none`` keeps ``[0, 1]``;
            ``auto``: ``imagenet`` for a torchvision model, ``none`` for a checkpoint.
        batch_size: images per batch.
        accelerator: Lightning's accelerator (``cpu``, ``gpu``, ``auto``).
        precision: Lightning's precision (``32-true``, ``16-mixed``, ``bf16-mixed``).
        trust_checkpoint: unpickle objects other than tensors in the checkpoint (only for a
            checkpoint you trust).
        compare: a second model (a checkpoint, or a torchvision name with
            ``--compare_weights``) to embed with the first in one space
            (``lightning_semvec.embed_models``): the same inputs, the same
            ``--model_class`` and ``--num_classes``; the report gets a Matching section and the
            projector a ``joint`` entry with a ``model`` column.
        compare_weights: the state-dict file of a torchvision ``--compare`` model.
        compare_layers: the second model's layers (default: ``layers``).
        overwrite: write into an ``out_dir`` that holds files (another run's): its knowledge
            file, report and projector folders are replaced; by default that is an error,
            raised before the model is read.

    Returns:
        The knowledge file's path (``<name>-vs-<other>.semvec.safetensors`` with ``--compare``).
    """
    check_int("batch_size", batch_size, 1)
    check_int("image_size", image_size, 1)
    names = _layer_names(layers)
    out = check_output_folder(out_dir, overwrite)
    if compare is None and (compare_weights is not None or compare_layers is not None):
        raise SemvecValueError("--compare_weights and --compare_layers go with --compare (the "
                               "second model).")
    network, stem, steps = _model(model, weights, model_class, num_classes, trust_checkpoint)
    torchvision_model = stem == model  # a name, not a checkpoint file
    imagenet = normalize == "imagenet" or (normalize == "auto" and torchvision_model)
    loader, class_names = _data(data, split, image_size, channels, imagenet, batch_size)
    runner = {"accelerator": accelerator, "precision": precision}
    if compare is None:
        knowledge = embed_neurons(network, loader, names, dim, class_names=class_names,
                                  trainer=runner, training_steps=steps)
    else:
        other, other_stem, _ = _model(compare, compare_weights, model_class, num_classes,
                                      trust_checkpoint)
        if other_stem == stem:  # two runs' "epoch=9-step=200": name them by their run folders
            stem, other_stem = _run_name(Path(model), stem), _run_name(Path(compare), other_stem)
            other_stem = other_stem if other_stem != stem else f"{other_stem}-2"
        other_names = names if compare_layers is None else _layer_names(compare_layers)
        knowledge = embed_models({stem: network, other_stem: other}, loader,
                                 {stem: names, other_stem: other_names}, dim,
                                 class_names=class_names, trainer=runner)
        knowledge.extra["compared_with"] = Path(compare).name
        stem = f"{stem}-vs-{other_stem}"
    knowledge.extra.update({"embedded_from": Path(model).name, "data": str(data)})
    out.mkdir(parents=True, exist_ok=True)
    path = knowledge.save(out / f"{stem}{KNOWLEDGE_SUFFIX}")
    write_report(path, out / "report", overwrite=True)  # the folder was checked above
    with staged_folder(out / "projector") as projector:  # this run's alone, put in place whole
        _write_projector(knowledge, projector)
    return path


def _run_name(path: Path, stem: str) -> str:
    """``version_3`` for ``lightning_logs/version_3/checkpoints/x.ckpt``; else ``stem``."""
    parents = path.resolve().parents
    return parents[1].name if path.parent.name == "checkpoints" and len(parents) > 1 else stem


def _layer_names(layers: str) -> list[str]:
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names:
        raise SemvecValueError("--layers is empty: give layer names or patterns, comma-separated.")
    return names


def _write_projector(knowledge: StaticKnowledge, log_dir: Path) -> None:
    for name in knowledge:
        layer = knowledge[name]
        metadata = neuron_metadata(name, layer.num_neurons, layer.statistics or None,
                                   knowledge.class_names)
        write_embedding(log_dir, name, layer.vectors, 0, metadata)
    write_joint_projector(log_dir, knowledge)  # models embedded together: one more entry


def _model(
    source: str, weights: str | None, model_class: str, num_classes: int, trust: bool
) -> tuple[nn.Module, str, int]:
    """``(network, file stem, training steps)`` of a checkpoint, or ``(network, source, 0)``
    of a torchvision name."""
    path = Path(source)
    if path.suffix == ".ckpt" or path.exists():
        if weights is not None:
            raise SemvecValueError("--weights is for a torchvision model name; a checkpoint "
                                   "holds its own weights.")
        checkpoint = load_checkpoint(path, trust)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise SemvecValueError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
        if not trust:
            _check_named_imports(path, checkpoint.get("hyper_parameters"), model_class)
        cls = _imported(model_class, "--model_class")
        if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
            raise SemvecValueError(f"--model_class {model_class} is not a LightningModule class.")
        try:
            # Lightning's own loader: it rebuilds what `semvec fit` (LightningCLI) saved, the
            # optimizer as {class_path, init_args} included, through its allow-listed
            # instantiator; the file was read above with the same trust, so this read is too.
            module = cls.load_from_checkpoint(path, map_location="cpu", weights_only=not trust)
        except (TypeError, RuntimeError, KeyError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            written_by = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
            hint = (f"it was written by {written_by}: pass --model_class {written_by}"
                    if written_by and written_by != f"{cls.__module__}.{cls.__qualname__}"
                    else "pass the LightningModule class that wrote it with --model_class")
            raise SemvecValueError(
                f"{path} does not rebuild as {cls.__name__} ({first}): {hint}.") from err
        return module, path.name.removesuffix(".ckpt"), int(checkpoint.get("global_step", 0))
    if source not in torchvision.models.list_models():
        raise SemvecValueError(
            f"{source!r} is neither a checkpoint file nor a torchvision model name (such as "
            "resnet18 or mobilenet_v3_small; see torchvision.models.list_models()).")
    if weights is None:
        raise SemvecValueError(
            f"--weights is needed with a torchvision model: the file of {source}'s state dict "
            f"(torch.save(model.state_dict(), 'weights.pt')); nothing is downloaded.")
    if not Path(weights).is_file():
        raise SemvecFileNotFoundError(f"No weights file at {weights}.")
    network = torchvision.models.get_model(source, weights=None, num_classes=num_classes)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SemvecValueError(
            f"{weights} is not a file of tensors that loads without running code ({first}): "
            "save the weights with torch.save(model.state_dict(), 'weights.pt').") from err
    try:
        network.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SemvecValueError(
            f"{weights} is not a state dict of {source} with {num_classes} classes ({first}): "
            "check --num_classes and the file.") from err
    return network, source, 0


def _data(
    data: str, split: str, image_size: int, channels: int, imagenet: bool, batch_size: int
) -> tuple[DataLoader[Any], list[str] | None]:
    """The dataloader of an image folder or a data module's split, and its class names."""
    folder = Path(data)
    if folder.is_dir():
        from torchvision import transforms

        steps = [transforms.Grayscale(channels), transforms.Resize(image_size),
                 transforms.CenterCrop(image_size), transforms.ToTensor()]
        if imagenet:
            steps.append(transforms.Normalize(_IMAGENET_MEAN[:channels], _IMAGENET_STD[:channels]))
        try:
            dataset = torchvision.datasets.ImageFolder(
                str(folder), transform=transforms.Compose(steps))
        except (FileNotFoundError, RuntimeError) as err:
            raise SemvecValueError(
                f"{folder} is not an image folder ({err}): it needs one sub-folder per class "
                "holding images (.png, .jpg, ...).") from err
        return DataLoader(dataset, batch_size=batch_size), list(dataset.classes)
    if "." not in data and data not in DATA_MODULES:
        raise SemvecFileNotFoundError(
            f"No folder {data}, and no data module of that name: give an image folder, one of "
            f"{', '.join(DATA_MODULES)}, or an import path (my_package.MyDataModule).")
    cls = _imported(DATA_MODULES.get(data, data), "data")
    module = cls()
    if not isinstance(module, pl.LightningDataModule):
        raise SemvecValueError(f"{data} is not a LightningDataModule.")
    module.prepare_data()
    module.setup("fit" if split != "test" else "test")
    loader = getattr(module, f"{split}_dataloader")()
    if isinstance(loader, DataLoader):  # in order: every pass sees the same batches
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size or batch_size,
                            num_workers=loader.num_workers, collate_fn=loader.collate_fn)
    names = getattr(module, "class_names", None)
    return loader, list(names) if names is not None else None


#: What a checkpoint's hyperparameters may name for import without --trust-checkpoint.
_SAFE_IMPORTS = ("lightning_semvec.", "torchvision.", "torch.", "lightning.pytorch.cli.")
_IMPORT_KEYS = ("class_path", "_class_path", "_instantiator")


def _check_named_imports(path: Path, hyper_parameters: Any, model_class: str) -> None:
    """Refuse, before anything is imported, a checkpoint whose hyperparameters name a module
    outside this package, torchvision, torch and the user's ``--model_class`` (Lightning's
    loader would import it: a file could run any installed module's import-time code)."""
    stack: list[tuple[str, Any]] = [("hyper_parameters", hyper_parameters)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                named = f"{where}.{key}"
                if key in _IMPORT_KEYS and isinstance(item, str):
                    allowed = item.startswith(_SAFE_IMPORTS) or item == model_class or \
                        item.startswith(model_class.rpartition(".")[0] + ".")
                    if not allowed:
                        raise SemvecValueError(
                            f"{path} names {item!r} to import ({named}); without "
                            "--trust-checkpoint only lightning_semvec, torchvision, torch and the "
                            "--model_class you name are imported: pass --model_class if that is "
                            "your module's class, or --trust-checkpoint for a file you trust.")
                else:
                    stack.append((named, item))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _imported(path: str, option: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise SemvecValueError(f"{option} {path}: cannot import it ({err}).") from err
