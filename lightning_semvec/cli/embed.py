"""``semvec embed``: a knowledge file, a report and projector files for a model already trained.

The model is a Lightning checkpoint, rebuilt as the class that wrote it (``semvec fit``'s
:class:`~lightning_semvec.models.ImageClassifier`, ``semvec distill``'s student; see
:mod:`lightning_semvec.cli._checkpoints`) unless ``--model_class`` names another, or a
torchvision model name with a state-dict file of the user's; ``--compare`` names a second one
(``--compare_model_class`` its class), embedded with the first in one space, and the terminal
gets a short matching summary (the CKA between the layers, then the matches). The knowledge file
is named after the model: a checkpoint in a Lightning run folder
(``lightning_logs/version_3/checkpoints/epoch=9-step=200.ckpt``) after the run (``version_3``),
another after its file name, a torchvision model after its name; ``--names`` names it. The data
is an image folder
(``torchvision.datasets.ImageFolder``: one sub-folder per class) or a ``LightningDataModule``,
by short name (``digits``, ``glyphs``, ``mnist``, ``cifar10``, ``cifar100``) or import path. Nothing is
downloaded unless a data module is told to.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torchvision
from torch import nn
from torch.utils.data import DataLoader

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.files import check_output_folder, staged_folder
from lightning_semvec.capture.layers import resolve_layers
from lightning_semvec.cli._checkpoints import DEFAULT_MODEL_CLASS, imported, rebuilt_model
from lightning_semvec.cli._data_names import DATA_MODULES
from lightning_semvec.cli._matching_summary import matching_summary
from lightning_semvec.embedding.joint_embedding import embed_models
from lightning_semvec.embedding.neuron_embedding import embed_neurons
from lightning_semvec.errors import SemvecFileNotFoundError, SemvecValueError
from lightning_semvec.knowledge import KNOWLEDGE_SUFFIX, StaticKnowledge
from lightning_semvec.projector import neuron_metadata, write_embedding
from lightning_semvec.projector.joint import write_joint_projector
from lightning_semvec.report.html import write_report

__all__ = ["DATA_MODULES", "embed_model"]

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: A model name of ``--names``: it names files, so letters, digits, ``_``, ``.``, ``-``.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def embed_model(
    model: str,
    data: str,
    layers: str,
    out_dir: str,
    dim: int = 16,
    weights: str | None = None,
    model_class: str | None = None,
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
    compare_model_class: str | None = None,
    names: str | None = None,
    max_matching_rows: int = 5,
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
            ``projector/`` (``tensorboard --logdir <out_dir>/projector``); ``<name>`` is the
            model's (see ``names``).
        dim: length of each semantic vector.
        weights: the state-dict file of a torchvision model (``torch.save(model.state_dict())``).
        model_class: the ``LightningModule`` class of a checkpoint, as an import path; default:
            the class that wrote it when the file tells (``semvec fit``'s ``ImageClassifier``,
            ``semvec distill``'s student, rebuilt from its run's ``config.yaml`` with layers
            ``student.<layer>``), else ``lightning_semvec.models.ImageClassifier``.
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
        compare: a second model (a checkpoint, such as the student ``semvec distill`` trained
            from the first, or a torchvision name with ``--compare_weights``) to embed with the
            first in one space (``lightning_semvec.embed_models``) on the same inputs; the report
            gets a Matching section, the projector a ``joint`` entry with a ``model`` column and
            the CKA between the layers (Images and Text tabs), and the terminal a matching
            summary.
        compare_weights: the state-dict file of a torchvision ``--compare`` model.
        compare_layers: the second model's layers; default: ``layers``, with the first model's
            network prefix replaced by the second's (``net.classifier.1`` of a ``semvec fit``
            model is ``student.classifier.1`` of a ``semvec distill`` student).
        compare_model_class: the ``LightningModule`` class of the ``--compare`` checkpoint;
            default: the class that wrote it when the file tells, else ``--model_class``.
        names: the model's name, which names the knowledge file ``<name>.semvec.safetensors``;
            with ``--compare`` the two models' names in the joint space, comma-separated
            (``teacher,student``): they prefix the layer names and name the knowledge file
            ``<name>-vs-<other>.semvec.safetensors``. Default: a checkpoint's run folder
            (``version_3`` of ``lightning_logs/version_3/checkpoints/x.ckpt``), else its file
            name's stem; a torchvision model's name (the stems when two runs' folders have one
            name). Letters, digits, ``_``, ``.`` and ``-``.
        max_matching_rows: with ``--compare``, the matches printed per layer pair in the
            terminal's matching summary (the best and the worst); 0 prints the counts alone.
        overwrite: write into an ``out_dir`` that holds files (another run's): its knowledge
            file, report and projector folders are replaced; by default that is an error,
            raised before the model is read.

    Returns:
        The knowledge file's path, ``<out_dir>/<name>.semvec.safetensors``
        (``<name>-vs-<other>.semvec.safetensors`` with ``--compare``).
    """
    check_int("batch_size", batch_size, 1)
    check_int("image_size", image_size, 1)
    check_int("max_matching_rows", max_matching_rows, 0,
              hint="(--max_matching_rows: the matches printed per layer pair; 0 prints the "
                   "counts alone).")
    layer_names = _layer_names(layers, "--layers")
    given = [option for option, value in (("--compare_weights", compare_weights),
                                          ("--compare_layers", compare_layers),
                                          ("--compare_model_class", compare_model_class))
             if value is not None]
    if compare is None and given:
        raise SemvecValueError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with "
                               "--compare (the second model): pass --compare or leave them out.")
    chosen = _model_names(names, 1 if compare is None else 2) if names is not None else None
    other_layers = _layer_names(compare_layers, "--compare_layers") if compare_layers else None
    out = check_output_folder(out_dir, overwrite)
    network, stem, steps = rebuilt_model(model, weights, model_class, num_classes, trust_checkpoint)
    torchvision_model = stem == model  # a name, not a checkpoint file
    if compare is not None:  # the second model and both models' layers, before the data
        other, other_stem, _ = rebuilt_model(
            compare, compare_weights, compare_model_class, num_classes, trust_checkpoint,
            "--compare_model_class", model_class or DEFAULT_MODEL_CLASS)
        _check_layers(network, layer_names, "--layers")
        second_layers = other_layers or _same_layers(layer_names, network, other)
        _check_layers(other, second_layers,
                      "--compare_layers" if other_layers else "--compare_layers (default: --layers)")
    imagenet = normalize == "imagenet" or (normalize == "auto" and torchvision_model)
    loader, class_names = _data(data, split, image_size, channels, imagenet, batch_size)
    runner = {"accelerator": accelerator, "precision": precision}
    embedded_from = Path(model).name
    name = stem if torchvision_model else _run_name(Path(model), stem)
    if compare is None:
        knowledge = embed_neurons(network, loader, layer_names, dim, class_names=class_names,
                                  trainer=runner, training_steps=steps)
        stem = chosen[0] if chosen is not None else name
    else:
        other_name = other_stem if other_stem == compare else _run_name(Path(compare), other_stem)
        if chosen is not None:
            stem, other_stem = chosen
        elif other_name != name:  # their runs' folders ("version_0", "version_1")
            stem, other_stem = name, other_name
        else:  # two checkpoints of one run, or runs with one folder name: their file names
            other_stem = other_stem if other_stem != stem else f"{other_stem}-2"
        knowledge = embed_models({stem: network, other_stem: other}, loader,
                                 {stem: layer_names, other_stem: second_layers}, dim,
                                 class_names=class_names, trainer=runner)
        embedded_from, compared_with = _distinct_sources((model, weights),
                                                         (compare, compare_weights))
        knowledge.extra["compared_with"] = compared_with
        stem = f"{stem}-vs-{other_stem}"
    knowledge.extra.update({"embedded_from": embedded_from, "data": str(data)})
    out.mkdir(parents=True, exist_ok=True)
    path = knowledge.save(out / f"{stem}{KNOWLEDGE_SUFFIX}")
    write_report(path, out / "report", overwrite=True)  # the folder was checked above
    with staged_folder(out / "projector") as projector:  # this run's alone, put in place whole
        _write_projector(knowledge, projector)
    if compare is not None:
        print("\n".join(matching_summary(knowledge, max_matching_rows)))
    return path


def _model_names(names: str, count: int) -> tuple[str, ...]:
    """The ``count`` names of ``--names a,b`` (one without ``--compare``); one line saying what
    is wrong otherwise."""
    parts = [part.strip() for part in names.split(",")]
    bad = [part for part in parts if not _MODEL_NAME.fullmatch(part)]
    if len(parts) != count or bad or len(set(parts)) != len(parts):
        why = (f"{len(parts)} name{'s' if len(parts) != 1 else ''}" if len(parts) != count else
               f"{bad[0]!r} is not a name" if bad else f"both are {parts[0]!r}")
        what = ("give two different names, comma-separated, each" if count == 2 else
                "without --compare give one name (it names the knowledge file),")
        example = "teacher,student" if count == 2 else "teacher"
        raise SemvecValueError(
            f"--names {names!r}: {why}; {what} of letters, digits, '_', '.' and '-' (at most "
            f"64, not starting with '.' or '-'), e.g. --names {example}.")
    return tuple(parts)


def _distinct_sources(
    first: tuple[str, str | None], second: tuple[str, str | None]
) -> tuple[str, str]:
    """What ``embedded_from`` and ``compared_with`` say: the two file names, or, when those
    are equal, the paths below the folder the two have in common
    (``version_0/checkpoints/epoch=9-step=200.ckpt``); a torchvision model by its name and
    weights file."""
    (model, weights), (compare, compare_weights) = first, second

    def described(source: str, weights_file: str | None, file: str) -> str:
        return f"{source} ({file})" if weights_file else file

    files = [Path(weights or model), Path(compare_weights or compare)]
    plain = described(model, weights, files[0].name), described(compare, compare_weights, files[1].name)
    resolved = [file.resolve() for file in files]
    if plain[0] != plain[1] or resolved[0] == resolved[1]:  # told apart, or one file twice
        return plain
    below = [file.relative_to(os.path.commonpath(resolved)).as_posix() for file in resolved]
    return described(model, weights, below[0]), described(compare, compare_weights, below[1])


def _run_name(path: Path, stem: str) -> str:
    """``version_3`` for ``lightning_logs/version_3/checkpoints/x.ckpt`` (a Lightning run
    folder's checkpoint, whose own name ``epoch=9-step=200`` says little); else ``stem``."""
    parents = path.resolve().parents
    return parents[1].name if path.parent.name == "checkpoints" and len(parents) > 1 else stem


def _layer_names(layers: str, option: str) -> list[str]:
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names:
        raise SemvecValueError(f"{option} is empty: give layer names or patterns, comma-separated.")
    return names


def _same_layers(layers: list[str], first: nn.Module, second: nn.Module) -> list[str]:
    """The second model's names of ``layers``: the first's network prefix (``net.``) replaced
    by the second's (``student.``) where the two differ (a model and its distilled student)."""
    old, new = (getattr(model, "network_attribute", None) for model in (first, second))
    if not (isinstance(old, str) and isinstance(new, str)) or old == new:
        return layers
    return [f"{new}{name[len(old):]}" if name == old or name.startswith(f"{old}.") else name
            for name in layers]


def _check_layers(model: nn.Module, layers: list[str], option: str) -> None:
    """Refuse, before any pass over the data, layers ``model`` does not have, naming the option
    and the closest names it has (a distilled student's are ``student.<layer>``)."""
    try:
        resolve_layers(model, layers)
    except SemvecValueError as err:
        raise SemvecValueError(f"{option}: {err}") from err


def _write_projector(knowledge: StaticKnowledge, log_dir: Path) -> None:
    for name in knowledge:
        layer = knowledge[name]
        metadata = neuron_metadata(name, layer.num_neurons, layer.statistics or None,
                                   knowledge.class_names)
        write_embedding(log_dir, name, layer.vectors, 0, metadata)
    write_joint_projector(log_dir, knowledge)  # models embedded together: one more entry


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
    cls = imported(DATA_MODULES.get(data, data), "data")
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
