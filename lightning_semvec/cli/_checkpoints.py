"""The models of ``semvec embed``: a Lightning checkpoint rebuilt as its class, or a torchvision
model with the user's state dict.

A checkpoint is rebuilt by the class the user names or, by default, the class that wrote it
when this package can tell: ``semvec fit`` (LightningCLI) saves it as the hyperparameter
``_class_path``; ``semvec distill``'s :class:`~lightning_semvec.distillation.StaticDistillationModule`
saves no hyperparameters, so its checkpoint is recognised by its state dict (``student.*`` and
``teacher_vectors_*``) and its student network is rebuilt from the run's ``config.yaml``, which
LightningCLI writes next to ``checkpoints/``: in a
:class:`~lightning_semvec.distillation.StudentModule`, so its layers are named
``student.<layer>`` as in the checkpoint.

Nothing a file names is imported unless it is of this package, torchvision or torch, or the
class the user named, or the user trusts the file (``--trust-checkpoint``).
"""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torchvision
import yaml  # type: ignore[import-untyped]  # PyYAML: Lightning's and jsonargparse's
from torch import nn

from lightning_semvec.callback.checkpoint import load_checkpoint
from lightning_semvec.errors import SemvecFileNotFoundError, SemvecValueError

__all__ = ["DEFAULT_MODEL_CLASS", "imported", "rebuilt_model", "short_error"]

#: The class of a checkpoint that names none (and is not recognised as a distilled student).
DEFAULT_MODEL_CLASS = "lightning_semvec.models.ImageClassifier"
#: What a checkpoint's hyperparameters may name for import without --trust-checkpoint.
_SAFE_IMPORTS = ("lightning_semvec.", "torchvision.", "torch.", "lightning.pytorch.cli.")
_IMPORT_KEYS = ("class_path", "_class_path", "_instantiator")
_STATIC_DISTILLATION = "lightning_semvec.distillation.StaticDistillationModule"
_STUDENT = "lightning_semvec.distillation.StudentModule"
#: The longest error text quoted from torch or Lightning in a message.
_QUOTED = 240


def rebuilt_model(
    source: str, weights: str | None, model_class: str | None, num_classes: int, trust: bool,
    option: str = "--model_class", fallback: str = DEFAULT_MODEL_CLASS,
) -> tuple[nn.Module, str, int]:
    """``(network, file stem, training steps)`` of a checkpoint, or ``(network, source, 0)``
    of a torchvision name.

    Args:
        source: a checkpoint file (or folder), or a torchvision model name.
        weights: the state-dict file of a torchvision model.
        model_class: the checkpoint's ``LightningModule`` class as an import path, named by the
            user (its module may be imported); ``None``: the class that wrote the checkpoint
            (see the module docstring), else ``fallback``.
        num_classes: the outputs of a torchvision model.
        trust: unpickle and import whatever the checkpoint names.
        option: the option that names ``model_class``, for messages (``--compare_model_class``).
        fallback: the class of a checkpoint that does not tell, as an import path; the user's
            (``--model_class`` for the second model) or :data:`DEFAULT_MODEL_CLASS`.
    """
    path = Path(source)
    if path.suffix == ".ckpt" or path.exists():
        if weights is not None:
            raise SemvecValueError("--weights is for a torchvision model name; a checkpoint "
                                   "holds its own weights.")
        return _rebuilt_checkpoint(path, model_class, fallback, trust, option)
    return _torchvision_model(source, weights, num_classes), source, 0


def _rebuilt_checkpoint(
    path: Path, model_class: str | None, fallback: str, trust: bool, option: str
) -> tuple[nn.Module, str, int]:
    checkpoint = load_checkpoint(path, trust)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise SemvecValueError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
    hyper_parameters = checkpoint.get("hyper_parameters")
    written_by = _written_by(checkpoint)
    # The user's class may be imported from (the fallback is the user's, or this package's).
    named = model_class or fallback
    if not trust:
        _check_named_imports(path, "hyper_parameters", hyper_parameters, named, option)
    name = model_class or written_by or fallback  # written_by passed the check above
    cls = imported(name, option)
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise SemvecValueError(f"{option} {name} is not a LightningModule class.")
    steps = int(checkpoint.get("global_step", 0))
    from lightning_semvec.distillation import StudentModule

    if issubclass(cls, StudentModule) and not hyper_parameters:  # what semvec distill writes
        config, student = _run_student(path)
        if config is not None and not trust:
            _check_named_imports(config, "model.student", student, named, option)
        return _student_module(path, cls, checkpoint, config, student), _stem(path), steps
    try:
        # Lightning's own loader: it rebuilds what `semvec fit` (LightningCLI) saved, the
        # optimizer as {class_path, init_args} included, through its allow-listed
        # instantiator; the file was read above with the same trust, so this read is too.
        module = cls.load_from_checkpoint(path, map_location="cpu", weights_only=not trust)
    except (TypeError, RuntimeError, KeyError, ValueError) as err:
        hint = (f"it was written by {written_by}: pass {option} {written_by}"
                if written_by and not _names(written_by, cls)
                else f"pass the LightningModule class that wrote it with {option}")
        raise SemvecValueError(
            f"{path} does not rebuild as {cls.__name__} ({short_error(err)}): {hint}.") from err
    return module, _stem(path), steps


def _stem(path: Path) -> str:
    """``epoch=9-step=200`` of ``.../epoch=9-step=200.ckpt``."""
    return path.name.removesuffix(".ckpt")


def _names(path: str, cls: type) -> bool:
    """Whether the import path ``path`` names ``cls`` (``lightning_semvec.models.X`` does
    name ``lightning_semvec.models.classifier.X``)."""
    try:
        return bool(imported(path, "class") is cls)
    except SemvecValueError:
        return False


def _written_by(checkpoint: Mapping[str, Any]) -> str | None:
    """The import path of the class that wrote ``checkpoint``, when the file tells."""
    hyper_parameters = checkpoint.get("hyper_parameters")
    if isinstance(hyper_parameters, Mapping) and isinstance(hyper_parameters.get("_class_path"), str):
        return str(hyper_parameters["_class_path"])
    keys = [key for key in checkpoint["state_dict"] if isinstance(key, str)]
    if hyper_parameters or not any(key.startswith("student.") for key in keys):
        return None
    # StudentModule and its subclasses save no hyperparameters; the static one keeps buffers.
    return _STATIC_DISTILLATION if any(k.startswith("teacher_vectors_") for k in keys) else _STUDENT


def _run_student(path: Path) -> tuple[Path | None, Any]:
    """``(config.yaml, its model.student)`` of the run that wrote ``path``: LightningCLI saves
    the run's configuration in the log folder, ``checkpoints/``' parent; ``(None, None)``
    where there is none."""
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    config = folder / "config.yaml"
    if not config.is_file():
        return None, None
    try:
        settings = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SemvecValueError(f"Cannot read {config}, the configuration of the run that wrote "
                               f"{path} ({short_error(err)}).") from err
    model = settings.get("model") if isinstance(settings, dict) else None
    if isinstance(model, dict) and "class_path" in model:  # a LightningCLI in subclass mode
        model = model.get("init_args")
    student = model.get("student") if isinstance(model, dict) else None
    return (config, student) if student is not None else (None, None)


def _student_module(
    path: Path, cls: type, checkpoint: Mapping[str, Any], config: Path | None, spec: Any
) -> nn.Module:
    """The student network of a distillation checkpoint, rebuilt from its run's configuration,
    in a :class:`~lightning_semvec.distillation.StudentModule` (layers ``student.<layer>``)."""
    from lightning_semvec.distillation import StudentModule

    if config is None:
        raise SemvecValueError(
            f"{path} was written by {cls.__name__} (semvec distill), which saves no "
            "hyperparameters: its student network is rebuilt from the config.yaml that semvec "
            "distill writes in the run folder (lightning_logs/version_N/, above checkpoints/), "
            "and there is none at "
            f"{(path.parent.parent if path.parent.name == 'checkpoints' else path.parent)}: keep "
            "the checkpoint in its run folder, or copy config.yaml next to it.")
    network = _instantiated(spec, config)
    if not isinstance(network, nn.Module):
        raise SemvecValueError(f"{config}: model.student is not an nn.Module class "
                               f"(got {type(network).__name__}).")
    prefix = f"{StudentModule.network_attribute}."
    state = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items()
             if key.startswith(prefix)}
    try:
        network.load_state_dict(state)
    except (RuntimeError, ValueError) as err:
        raise SemvecValueError(
            f"{path} does not hold the weights of the student {config} describes "
            f"({short_error(err)}): keep the checkpoint with the config.yaml of its own run.") from err
    return StudentModule(network, _classes(spec, network))


def _instantiated(spec: Any, config: Path) -> Any:
    """``spec`` with every ``{class_path, init_args}`` built (innermost first)."""
    if isinstance(spec, dict) and isinstance(spec.get("class_path"), str):
        arguments = {key: _instantiated(value, config)
                     for key, value in (spec.get("init_args") or {}).items()}
        cls = imported(spec["class_path"], f"{config}: class_path")
        try:
            return cls(**arguments)
        except (TypeError, ValueError, RuntimeError) as err:
            raise SemvecValueError(f"{config}: {spec['class_path']} does not build from its "
                                   f"init_args ({short_error(err)}).") from err
    if isinstance(spec, list):
        return [_instantiated(item, config) for item in spec]
    return spec


def _classes(spec: Any, network: nn.Module) -> int:
    """The student's number of classes: its ``num_classes`` argument, else the outputs of its
    last ``Linear`` (at least 2; the embedding does not use it)."""
    given = spec.get("init_args", {}).get("num_classes") if isinstance(spec, dict) else None
    if isinstance(given, int) and not isinstance(given, bool) and given >= 2:
        return given
    linears = [m.out_features for m in network.modules() if isinstance(m, nn.Linear)]
    return max(2, linears[-1]) if linears else 2


def _torchvision_model(source: str, weights: str | None, num_classes: int) -> nn.Module:
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
        raise SemvecValueError(
            f"{weights} is not a file of tensors that loads without running code "
            f"({short_error(err)}): save the weights with torch.save(model.state_dict(), "
            "'weights.pt').") from err
    try:
        network.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        raise SemvecValueError(
            f"{weights} is not a state dict of {source} with {num_classes} classes "
            f"({short_error(err)}): check --num_classes and the file.") from err
    return network


_KEYS_LINE = re.compile(r"^(Missing|Unexpected) key\(s\) in state_dict: (.*)$")


def short_error(err: BaseException) -> str:
    """An exception's message on one short line.

    torch's ``Error(s) in loading state_dict for X:`` says what is wrong on the lines after it
    (missing and unexpected keys, size mismatches): they are joined on, each key list shortened
    to its first keys and its count.

    Example:
        >>> short_error(RuntimeError('Error(s) in loading state_dict for M:\\n\\tMissing key(s) '
        ...     'in state_dict: "a.w", "a.b", "c.w", "c.b". '))
        'Error(s) in loading state_dict for M: missing keys a.w, a.b, c.w, ... (4 in all)'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text += " " + "; ".join(_short_keys(line) for line in lines[1:])
    return text if len(text) <= _QUOTED else text[:_QUOTED - 3].rstrip() + "..."


def _short_keys(line: str) -> str:
    found = _KEYS_LINE.match(line)
    if found is None:
        return line
    keys = re.findall(r'"([^"]*)"', found.group(2))
    shown = ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")
    return f"{found.group(1).lower()} keys {shown}"


def _check_named_imports(
    path: Path, root: str, value: Any, model_class: str | None, option: str
) -> None:
    """Refuse, before anything is imported, a file whose hyperparameters (or run configuration)
    name a module outside this package, torchvision, torch and the user's ``model_class``
    (Lightning's loader would import it: a file could run any installed module's import-time
    code)."""
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, entry in item.items():
                named = f"{where}.{key}"
                if key in _IMPORT_KEYS and isinstance(entry, str):
                    if not _allowed(entry, model_class):
                        raise SemvecValueError(
                            f"{path} names {entry!r} to import ({named}); without "
                            "--trust-checkpoint only lightning_semvec, torchvision, torch and the "
                            f"{option} you name are imported: pass {option} if that is "
                            "your module's class, or --trust-checkpoint for a file you trust.")
                else:
                    stack.append((named, entry))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", entry) for i, entry in enumerate(item))


def _allowed(name: str, model_class: str | None) -> bool:
    """Whether ``name`` may be imported: of this package, torchvision or torch, or of the
    module of the class the user named."""
    if name.startswith(_SAFE_IMPORTS):
        return True
    return model_class is not None and (
        name == model_class or name.startswith(model_class.rpartition(".")[0] + "."))


def imported(path: str, option: str) -> Any:
    """The object an import path names (``package.module.Name``); one line if it cannot."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise SemvecValueError(f"{option} {path}: cannot import it ({err}).") from err
