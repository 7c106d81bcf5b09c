"""`semvec embed`: a checkpoint or torchvision weights, and a data module or an image folder,
give a knowledge file, a report and projector files (nothing downloaded)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli._main import main
from lightning_semvec.projector import read_projector_config


def photo_folder(root: Path) -> Path:
    """An ImageFolder of 8 PNGs in two classes (bright and dark)."""
    g = torch.Generator().manual_seed(0)
    for index in range(8):
        label = ("bright", "dark")[index % 2]
        (root / label).mkdir(parents=True, exist_ok=True)
        base = 180 if label == "bright" else 40
        pixels = (base + 60 * torch.rand(40, 40, 3, generator=g)).clamp(0, 255).byte().numpy()
        Image.fromarray(pixels).save(root / label / f"{index}.png")
    return root


def test_embed_a_checkpoint_on_a_data_module(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["embed", str(checkpoint), "digits", "net.features.2, net.classifier.1", str(out),
                 "--dim", "4", "--accelerator", "cpu", "--split", "val", "--trust-checkpoint"]) == 0
    printed = capsys.readouterr().out
    knowledge_path = out / "epoch=0-step=3.semvec.safetensors"
    assert f"Knowledge file: {knowledge_path}" in printed
    knowledge = StaticKnowledge.load(knowledge_path)
    assert knowledge.layer_names == ["net.features.2", "net.classifier.1"]
    assert knowledge["net.classifier.1"].vectors.shape == (32, 4)
    assert knowledge.training_steps == 3
    assert knowledge.class_names == [str(i) for i in range(10)]
    assert knowledge["net.classifier.1"].statistics["class_means"].shape == (10, 32)
    report = (out / "report" / "index.html").read_text()
    assert "net.classifier.1" in report
    config = (out / "projector" / "projector_config.pbtxt").read_text()
    assert "net.features.2" in config and "net.classifier.1" in config


def test_embed_torchvision_weights_on_an_image_folder(tmp_path):
    photos = photo_folder(tmp_path / "photos")
    weights = tmp_path / "squeezenet.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), weights)
    out = tmp_path / "out"
    assert main(["embed", "squeezenet1_1", str(photos), "features.3,features.12", str(out),
                 "--weights", str(weights), "--num-classes", "2", "--image-size", "32",
                 "--dim", "3", "--batch-size", "4", "--accelerator", "cpu"]) == 0
    knowledge = StaticKnowledge.load(out / "squeezenet1_1.semvec.safetensors")
    assert knowledge.class_names == ["bright", "dark"]
    assert knowledge["features.12"].vectors.shape == (512, 3)
    assert knowledge["features.3"].statistics["class_counts"].tolist() == [4.0, 4.0]
    assert (out / "report" / "index.html").is_file()
    # The folder now holds a run: another is refused before the model is read, and replaces it
    # with --overwrite (the projector folder holds the new run's entries alone).
    again = ["embed", "squeezenet1_1", str(photos), "features.12", str(out), "--weights", str(weights),
             "--num-classes", "2", "--image-size", "32", "--dim", "3", "--batch-size", "4", "--accelerator", "cpu"]
    assert main(again) == 2
    assert main([*again, "--overwrite"]) == 0
    entries = {entry.tag for entry in read_projector_config(out / "projector")}
    assert entries == {"features.12"}
    assert StaticKnowledge.load(out / "squeezenet1_1.semvec.safetensors").layer_names == ["features.12"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["no_such_net", "{photos}", "features.3", "{out}"],
         "'no_such_net' is neither a checkpoint file nor a torchvision model name"),
        (["squeezenet1_1", "{photos}", "features.3", "{out}"],
         "--weights is needed with a torchvision model"),
        (["squeezenet1_1", "{photos}", "features.3", "{out}", "--weights", "{weights}"],
         "is not a state dict of squeezenet1_1 with 1000 classes"),
        (["squeezenet1_1", "{tmp}/nowhere", "features.3", "{out}", "--weights", "{weights}",
          "--num-classes", "2"], "No folder {tmp}/nowhere, and no data module of that name"),
        (["squeezenet1_1", "{photos}", " , ", "{out}", "--weights", "{weights}",
          "--num-classes", "2"], "--layers is empty"),
        (["squeezenet1_1", "{photos}", "features.99", "{out}", "--weights", "{weights}",
          "--num-classes", "2", "--image-size", "32"], "Layer 'features.99' matches no module"),
        (["{tmp}/missing.ckpt", "digits", "net.features.2", "{out}"], "No checkpoint at"),
        # A pickle that names code (a whole model saved with torch.save): UnpicklingError before.
        (["squeezenet1_1", "{photos}", "features.3", "{out}", "--weights", "{tmp}/pickled.pt"],
         "{tmp}/pickled.pt is not a file of tensors that loads without running code"),
        (["squeezenet1_1", "{photos}", "features.3", "{out}", "--weights", "{tmp}/empty.pt"],
         "{tmp}/empty.pt is not a file of tensors that loads without running code"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, arguments, message):
    photos = photo_folder(tmp_path / "photos")
    weights = tmp_path / "squeezenet.pt"
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), weights)
    torch.save({"net": functools.partial(print, "ran")}, tmp_path / "pickled.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    values = {"photos": photos, "out": tmp_path / "out", "weights": weights, "tmp": tmp_path}
    assert main(["embed", *(a.format(**values) for a in arguments)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("semvec embed: error: ") and len(error.splitlines()) == 1, error
    assert message.format(**values) in error
    assert not (tmp_path / "out").exists()


def test_embed_reads_what_semvec_fit_wrote(tmp_path, monkeypatch, capsys):
    # LightningCLI saves `_class_path`, `_instantiator` and the optimizer as {class_path,
    # init_args} among the hyperparameters: the model must rebuild as `semvec fit` built it.
    monkeypatch.chdir(tmp_path)
    for seed in ("0", "1"):  # two runs: version_0 and version_1, the same checkpoint name
        assert main(["fit", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
                     "--semvec.dim", "4", "--semvec.analysis", "null", "--seed_everything", seed]) == 0
    checkpoint, other = (next(tmp_path.glob(f"lightning_logs/version_{v}/checkpoints/*.ckpt"))
                         for v in (0, 1))
    assert checkpoint.name == other.name
    assert "_instantiator" in torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    capsys.readouterr()
    assert main(["embed", str(checkpoint), "digits", "net.classifier.1", "one", "--dim", "4"]) == 0, (
        capsys.readouterr().err)
    (single,) = (tmp_path / "one").glob("*.semvec.safetensors")
    assert StaticKnowledge.load(single).training_steps == 2
    assert main(["embed", str(checkpoint), "digits", "net.classifier.1", "two", "--dim", "4",
                 "--compare", str(other)]) == 0, capsys.readouterr().err
    (joint,) = (tmp_path / "two").glob("*.semvec.safetensors")
    assert joint.name == "version_0-vs-version_1.semvec.safetensors"
    assert StaticKnowledge.load(joint).layer_names == ["version_0/net.classifier.1",
                                                       "version_1/net.classifier.1"]
    # The report says where the statistics come from, and names what it compares.
    for folder, model_row in (("one", "<th>model</th>"), ("two", "<th>models</th>")):
        page = (tmp_path / folder / "report" / "index.html").read_text()
        assert "measured on the data it was embedded on" in page and model_row in page
        assert "last analysed validation epoch" not in page and "teacher model" not in page


def test_a_checkpoint_naming_a_module_outside_the_package_is_refused_before_importing_it(tmp_path, capsys):
    # Before: `this.Nothing` was imported (the Zen of Python printed), then a jsonargparse traceback.
    import sys

    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "hyper_parameters": {
        "_class_path": "lightning_semvec.models.ImageClassifier",
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
        "model": {"class_path": "this.Nothing"}}}, path)
    sys.modules.pop("this", None)
    assert main(["embed", str(path), "digits", "net.features.2", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "Beautiful is better than ugly" not in captured.out and "this" not in sys.modules
    error = captured.err.strip()
    assert len(error.splitlines()) == 1 and (
        "hostile.ckpt names 'this.Nothing' to import (hyper_parameters.model.class_path); without "
        "--trust-checkpoint only lightning_semvec, torchvision, torch and the --model_class you name "
        "are imported") in error
    assert not (tmp_path / "out").exists()
