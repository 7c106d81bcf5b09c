"""The callback's projector export: every layer and column, neuron images, resume, DDP.

The files on their own are tested in test_projector_files.py, the images in
test_projector_sprites.py and the top-inputs metric in test_top_activating_inputs.py.
"""

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tiny_models import TinyConvNet, make_data, trainer_kwargs
from torch.utils.data import DataLoader, DistributedSampler

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.batches import labels_of_batch
from lightning_semvec.metrics import TopActivatingInputs
from lightning_semvec.projector import (
    METADATA_COLUMNS,
    make_sprite,
    read_embedding_metadata,
    read_projector_config,
    tile_images,
    to_thumbnails,
)

LAYERS = ["features.1", "classifier.2"]


def step_entries(log_dir):
    """The config's entries of each (layer, step), without the "(latest)" entry."""
    return [e for e in read_projector_config(log_dir) if not e.is_latest]


def fit(tmp_path, callbacks, model=None, version=0, ckpt_path=None, **overrides):
    pl.seed_everything(0, verbose=False)
    kwargs = trainer_kwargs(
        logger=TensorBoardLogger(tmp_path, name="run", version=version),
        limit_val_batches=None,
        max_epochs=2,
    )
    kwargs.update(overrides)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(model or TinyConvNet(), ckpt_path=ckpt_path)
    return trainer


def test_entries_written_before_a_resume_are_still_listed(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(figures=False))
    fit(tmp_path, [first, ckpt], max_epochs=2, enable_checkpointing=True)
    log_dir = tmp_path / "run" / "version_0"
    before = [e.tensor_name for e in step_entries(log_dir)]
    assert before == ["features.1:00006", "classifier.2:00006", "features.1:00012",
                      "classifier.2:00012"]  # 96 samples / 16 = 6 steps per epoch

    # A new process resumes into the same log folder: a fresh callback, logger and writer.
    resumed = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(figures=False))
    fit(tmp_path, [resumed], max_epochs=4, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    after = [e.tensor_name for e in step_entries(log_dir)]
    assert after == [*before, "features.1:00018", "classifier.2:00018", "features.1:00024", "classifier.2:00024"]
    # One "(latest)" entry, of the last export: the resumed run replaced the first run's.
    assert [e.tensor_name for e in read_projector_config(log_dir) if e.is_latest] == [
        "(latest) features.1:00024"]  # 4 neurons: wider than classifier.2's 3
    for entry in read_projector_config(log_dir):
        assert (log_dir / entry.tensor_path).is_file() and (log_dir / entry.metadata_path).is_file()


# ------------------------------------------------------------------ the callback's export


def test_callback_writes_every_layer_with_all_metadata_columns_and_sprite(tmp_path):
    semvec = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(
        figures=False, log_every_n_epochs=2, num_classes=3))
    trainer = fit(tmp_path, [semvec], max_epochs=3)
    log_dir = tmp_path / "run" / "version_0"
    entries = step_entries(log_dir)
    # Epoch 2 (step 12) by the cadence, then the end of fit (step 18).
    assert [e.tensor_name for e in entries] == ["features.1:00012", "classifier.2:00012",
                                                "features.1:00018", "classifier.2:00018"]
    for entry in entries:
        n = {"features.1": 4, "classifier.2": 3}[entry.tag]
        columns = read_embedding_metadata(log_dir, entry)
        assert tuple(columns) == METADATA_COLUMNS
        assert all(len(values) == n for values in columns.values())
        assert columns["layer"] == [entry.tag] * n
        assert columns["neuron"] == [str(i) for i in range(n)]
        assert entry.sprite_dim == (32, 32) and entry.tensor_shape == (n, 3)
    # The statistics come from the validation set: 32 samples of 3 classes.
    stats = semvec.neuron_statistics["classifier.2"]
    assert stats["class_counts"].sum() == 32
    columns = read_embedding_metadata(log_dir, entries[1])
    assert columns["preferred_class"] == [str(c) for c in stats["preferred_class"].tolist()]
    assert columns["preferred_class_id"] == columns["preferred_class"]  # no class names
    assert columns["label"] == [
        f"classifier.2 #{i}: dead" if dead else f'classifier.2 #{i}: "{c}"' + (
            f", selectivity {s:.2f}" if 0 <= s <= 1 else "")
        for i, (c, s, dead) in enumerate(zip(stats["preferred_class"].tolist(),
                                             stats["selectivity"].tolist(),
                                             stats["dead"].tolist()))]
    assert [float(v) for v in columns["mean_activation"]] == pytest.approx(
        stats["mean_activation"].tolist(), rel=1e-5)
    assert set(columns["dead"]) <= {"alive", "dead"}
    # Fidelity was logged through the trainer after validation.
    assert "semvec/classifier.2/fidelity" in trainer.callback_metrics
    assert "semvec/features.1/neighbour_agreement" in trainer.callback_metrics


def test_a_dead_neurons_thumbnail_is_a_plain_grey_tile(tmp_path):
    """A neuron that never fires has no top input (only ties at zero): its sprite cell is plain
    DEAD_GREY, not the first validation image, while the alive neurons keep theirs."""
    from PIL import Image

    from lightning_semvec.analysis.projector_export import DEAD_GREY

    class OneDeadChannel(TinyConvNet):
        def __init__(self) -> None:
            super().__init__(lr=0.0)  # no update, so the channel stays dead
            with torch.no_grad():
                self.features[0].weight[2].zero_()
                self.features[0].bias[2] = -1.0

    semvec = SemanticVectorCallback(layers="features.1", dim=2, analysis=AnalysisOptions(
        figures=False, thumbnail_size=6, num_classes=3))
    torch.manual_seed(0)
    fit(tmp_path, [semvec], model=OneDeadChannel(), max_epochs=1)
    dead = semvec.neuron_statistics["features.1"]["dead"]
    assert dead[2] and not dead.all()  # the channel made dead, and at least one alive
    (entry,) = step_entries(tmp_path / "run" / "version_0")
    sprite = np.asarray(Image.open(tmp_path / "run" / "version_0" / entry.sprite_path))
    for neuron in range(4):
        row, col = divmod(neuron, 2)
        cell = sprite[row * 6 : row * 6 + 6, col * 6 : col * 6 + 6]
        assert (cell == DEAD_GREY).all() == dead[neuron].item(), neuron


def test_top1_image_is_the_validation_input_that_activates_the_neuron_most(tmp_path):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=AnalysisOptions(
        figures=False, thumbnail_size=6, class_names=["a", "b", "c"]))
    _, model = None, TinyConvNet()
    fit(tmp_path, [semvec], model=model, max_epochs=1)
    x, _ = make_data(32, seed=1).tensors
    model.eval()
    with torch.no_grad():
        best = model(x).argmax(dim=0)
    (entry,) = step_entries(tmp_path / "run" / "version_0")
    from PIL import Image

    sprite = np.asarray(Image.open(tmp_path / "run" / "version_0" / entry.sprite_path))
    expected = tile_images(to_thumbnails(x[best], 6).unsqueeze(1))  # (3, 3, 6, 6)
    for neuron in range(3):
        row, col = divmod(neuron, 2)  # 3 neurons: a 2 x 2 sprite
        cell = sprite[row * 6 : row * 6 + 6, col * 6 : col * 6 + 6]
        assert np.array_equal(cell, expected[neuron].permute(1, 2, 0).numpy()), neuron
    columns = read_embedding_metadata(tmp_path / "run" / "version_0", entry)
    alive = [c for c, d in zip(columns["preferred_class"], columns["dead"]) if d == "alive"]
    assert alive and set(alive) <= {"a", "b", "c"}


def test_grid_images_and_thumbnail_sizes(tmp_path):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=AnalysisOptions(
        figures=False, projector_images="grid", projector_top_k=4, thumbnail_size=5))
    fit(tmp_path, [semvec], max_epochs=1)
    (entry,) = step_entries(tmp_path / "run" / "version_0")
    assert entry.sprite_dim == (10, 10)  # 2 x 2 thumbnails of 5 pixels


def test_without_tensorboard_logger_only_scalars_and_one_message(tmp_path, caplog):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=CSVLogger(tmp_path), limit_val_batches=None, max_epochs=2))
    with caplog.at_level(logging.INFO):
        trainer.fit(TinyConvNet())
    messages = [r.getMessage() for r in caplog.records if "no TensorBoardLogger" in r.getMessage()]
    assert len(messages) == 1
    assert not list(tmp_path.rglob("projector_config.pbtxt"))
    assert np.isfinite(semvec.fidelity["classifier.2"]["spearman"])
    assert "semvec/classifier.2/fidelity" in (tmp_path / "lightning_logs" / "version_0" /
                                              "metrics.csv").read_text()


def test_label_fn_and_missing_labels(tmp_path):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=AnalysisOptions(
        figures=False, projector=False, num_classes=3, label_fn=lambda b: torch.zeros_like(b[1])))
    fit(tmp_path, [semvec], max_epochs=1)
    assert semvec.neuron_statistics["classifier.2"]["class_counts"].tolist() == [32.0, 0.0, 0.0]

    unknown = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=AnalysisOptions(
        figures=False, label_fn=lambda batch: None, projector_images="off"))
    fit(tmp_path, [unknown], max_epochs=1, version=1)
    assert set(unknown.neuron_statistics["classifier.2"]) == {"mean_activation", "dead"}
    (entry,) = step_entries(tmp_path / "run" / "version_1")
    columns = read_embedding_metadata(tmp_path / "run" / "version_1", entry)
    assert columns["preferred_class"] == [""] * 3 and columns["dead"] != [""] * 3
    assert entry.sprite_path == ""  # projector_images="off"


def test_bad_labels_are_clear_errors():
    batch = make_data(4).tensors
    quiet = WarningCache("test", muted=("",))  # every key muted: says nothing
    with pytest.raises(TypeError, match="label_fn must return .* dtype torch.float32"):
        labels_of_batch(batch, lambda b: b[1].float(), 3, quiet)
    with pytest.raises(ValueError, match=r"outside \[0, 3\) for num_classes=3"):
        labels_of_batch(batch, lambda b: b[1] + 5, 3, quiet)
    assert labels_of_batch([batch[0]], None, 3, quiet) is None  # no labels: None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(projector_images="best"), ValueError, "Unknown projector_images 'best'"),
        (dict(log_every_n_epochs=0), ValueError, "log_every_n_epochs"),
        (dict(projector_top_k=0), ValueError, "projector_top_k"),
        (dict(fidelity_max_neurons=2), ValueError, "fidelity_max_neurons"),
        (dict(num_classes=1), ValueError, "num_classes"),
        (dict(num_classes=3, class_names=["a", "b"]), ValueError,
         "class_names has 2 names but num_classes is 3"),
        (dict(label_fn="y"), TypeError, "label_fn must be a callable"),
    ],
)
def test_bad_analysis_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        AnalysisOptions(**kwargs)
    with pytest.raises(TypeError, match="analysis must be an AnalysisOptions"):
        SemanticVectorCallback(layers="classifier.2", analysis=kwargs)


def test_analysis_none_turns_validation_work_off(tmp_path):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, analysis=None)
    trainer = fit(tmp_path, [semvec], max_epochs=1)
    assert semvec.fidelity == {} and "semvec/classifier.2/fidelity" not in trainer.callback_metrics
    assert not list(tmp_path.rglob("projector_config.pbtxt"))


# ------------------------------------------------------------------ several processes


class ShardedVal(TinyConvNet):
    """Validation split over the processes in a fixed order, as Lightning's sampler would."""

    def val_dataloader(self):
        data = make_data(32, seed=1)
        sampler = DistributedSampler(data, self.trainer.world_size, self.trainer.global_rank,
                                     shuffle=False)
        return DataLoader(data, batch_size=8, sampler=sampler)


class CompareWithWholeSet(pl.Callback):
    """On each process, after fit: the callback's results and the same metrics computed on
    the whole validation set in this one process, saved for the test to compare."""

    def __init__(self, semvec, directory):
        self.semvec, self.directory = semvec, directory

    def on_fit_end(self, trainer, pl_module):
        from lightning_semvec.metrics import (
            NeuronActivationStatistics,
            SemanticFidelity,
        )

        x, y = make_data(32, seed=1).tensors
        outputs = {}
        modules = dict(pl_module.named_modules())
        handles = [modules[name].register_forward_hook(
            lambda m, i, out, name=name: outputs.__setitem__(name, out.mean(dim=(2, 3))
                                                             if out.ndim == 4 else out))
            for name in LAYERS]
        pl_module.eval()
        with torch.no_grad():
            pl_module(x)
        for handle in handles:
            handle.remove()
        expected = {}
        for name, acts in outputs.items():
            stats = NeuronActivationStatistics(acts.shape[1], 3, sync_on_compute=False)
            stats.update(acts, y)
            fidelity = SemanticFidelity(acts.shape[1], k=min(5, acts.shape[1] - 1),
                                        sync_on_compute=False)
            fidelity.update(acts)
            fidelity.set_vectors(self.semvec.semantic_vectors[name])
            top = TopActivatingInputs(acts.shape[1], 1, 32, sync_on_compute=False)
            top.update(acts, x)
            expected[name] = {"stats": stats.compute(), "fidelity": fidelity.compute(),
                              "thumbnails": top.compute()["thumbnails"]}
        torch.save({"stats": self.semvec.neuron_statistics, "fidelity": self.semvec.fidelity,
                    "expected": expected}, self.directory / f"rank{trainer.global_rank}.pt")


def test_ddp_statistics_images_and_fidelity_cover_the_whole_validation_set(tmp_path):
    from PIL import Image

    # Not finished: the fidelity compared is that of the vectors the pass saw.
    semvec = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(
        figures=False, num_classes=3, finish_vectors=False))
    pl.seed_everything(0, verbose=False)
    fit(tmp_path, [semvec, CompareWithWholeSet(semvec, tmp_path)], model=ShardedVal(batch_size=8),
        max_epochs=1, devices=2, strategy="ddp_spawn", use_distributed_sampler=False)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for result in results:  # every process holds the statistics of all 32 samples
        for layer in LAYERS:
            expected = result["expected"][layer]
            for key, value in expected["stats"].items():
                torch.testing.assert_close(result["stats"][layer][key], value, rtol=1e-5, atol=1e-6)
            for key, value in expected["fidelity"].items():
                assert result["fidelity"][layer][key] == pytest.approx(value.item(), abs=1e-5)
    assert results[0]["stats"]["classifier.2"]["class_counts"].sum() == 32
    # Only rank 0 wrote, once per layer, and its sprites hold the whole set's best images.
    log_dir = tmp_path / "run" / "version_0"
    entries = step_entries(log_dir)
    assert [e.tensor_name for e in entries] == ["features.1:00006", "classifier.2:00006"]
    for entry in entries:
        sprite = np.asarray(Image.open(log_dir / entry.sprite_path))
        thumbs = results[0]["expected"][entry.tag]["thumbnails"]
        expected = make_sprite(tile_images(thumbs).numpy())
        assert np.array_equal(sprite, expected), entry.tag
