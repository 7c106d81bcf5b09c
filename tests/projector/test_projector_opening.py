"""What TensorBoard's projector opens on and shows first: the "(latest)" entry, the label
column, the colourable columns, and layers wider than it shows.

The rules replayed here are TensorBoard 2.21's frontend
(``tensorboard/plugins/projector/tf_projector_plugin/projector_binary.js``): see
``lightning_semvec/projector/opening.py`` and ``metadata.py``. test_tensorboard_server.py
checks the order against the real server's answer.
"""

import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.analysis.projector_export import opening_layer
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector import (
    EmbeddingEntry,
    make_sprite,
    neuron_metadata,
    projector_open_order,
    read_embedding_metadata,
    read_embedding_tensor,
    read_projector_config,
    tile_images,
    write_embedding,
    write_latest_entry,
)

COLOUR_TEXT_LIMIT = 50  # "Tct=50" in the frontend: more distinct texts and a column is not offered


def is_numeric(values):
    """The frontend's test: every value (empty ones are skipped) is a number to JavaScript."""
    def number(value):
        try:
            float(value)
        except ValueError:
            return False
        return True

    return all(number(v) for v in values if v != "")


def label_by_default(columns):
    """The frontend's first "Label by" choice: the first column that is not numeric."""
    return next((name for name, values in columns.items() if not is_numeric(values)),
                next(iter(columns)))


def colour_by_choices(columns):
    """The frontend's "Color by" menu: numeric columns, and those of at most 50 values."""
    return [name for name, values in columns.items()
            if is_numeric(values) or len(set(values) - {""}) <= COLOUR_TEXT_LIMIT]


def as_text(columns):
    return {name: [str(v) for v in np.asarray(values).tolist()] for name, values in
            columns.items()}


# ------------------------------------------------------------------ metadata columns


def test_label_column_is_what_the_projector_labels_by_and_reads_per_neuron():
    stats = {"preferred_class": torch.tensor([7, 2, 0, 1]),
             "selectivity": torch.tensor([.81, .5, 0., -3.2]),
             "mean_activation": torch.tensor([1., 2., 0., -1.]),
             "dead": torch.tensor([False, False, True, False])}
    columns = as_text(neuron_metadata("net.classifier.3", 4, stats, [str(c) for c in range(10)]))
    assert label_by_default(columns) == "label"
    assert columns["label"] == ['net.classifier.3 #0: "7", selectivity 0.81',
                                'net.classifier.3 #1: "2", selectivity 0.50',
                                "net.classifier.3 #2: dead",
                                'net.classifier.3 #3: "1"']  # -3.2: negative class means
    assert columns["layer"] == ["net.classifier.3"] * 4  # kept for scripts that read it


def test_more_than_50_classes_still_colour_through_the_numeric_column():
    names = [f"class {c}" for c in range(60)]
    stats = {"preferred_class": torch.arange(60) % 60}
    columns = as_text(neuron_metadata("fc", 60, stats, names))
    choices = colour_by_choices(columns)
    assert "preferred_class" not in choices  # 60 distinct names: the projector drops it
    assert "preferred_class_id" in choices
    assert columns["preferred_class_id"] == [str(c) for c in range(60)]
    few = as_text(neuron_metadata("fc", 4, {"preferred_class": torch.tensor([0, 1, 1, 2])},
                                  ["cat", "dog", "cow"]))
    assert {"preferred_class", "preferred_class_id"} <= set(colour_by_choices(few))


@pytest.mark.parametrize("ids", [[0, 0], [3], [-1], [[0]], [0.5], [], "0"])
def test_bad_neuron_ids_are_a_clear_error(ids):
    with pytest.raises(SemvecValueError, match=r"neuron_ids must be distinct neuron indices in "
                                               r"range\(3\)"):
        neuron_metadata("fc", 3, neuron_ids=ids)


def test_neuron_ids_pick_rows_and_keep_the_layer_indices():
    stats = {"mean_activation": torch.tensor([0., 10., 20., 30.])}
    columns = as_text(neuron_metadata("fc", 4, stats, neuron_ids=torch.tensor([1, 3])))
    assert columns["neuron"] == ["1", "3"] and columns["mean_activation"] == ["10.0", "30.0"]
    assert columns["label"] == ["fc #1", "fc #3"]


# ------------------------------------------------------------------ the entry opened first


def test_open_order_replays_the_frontend_sort():
    entries = [
        EmbeddingEntry("z:00001", "t", (5, 2), "m"),
        EmbeddingEntry("a:00002", "t", (5, 2), "m"),
        EmbeddingEntry("a:00001", "t", (5, 2), "m"),
        EmbeddingEntry("wide:00001", "t", (50, 2)),  # no metadata: after all that have some
        EmbeddingEntry("emb/Adagrad", "t", (90, 2), "m"),  # optimizer slot: last
        EmbeddingEntry("narrow:00001", "t", (3, 2), "m"),
        EmbeddingEntry("line:00001", "t", (9, 1), "m"),  # one dimension: not listed
    ]
    assert [e.tensor_name for e in projector_open_order(entries)] == [
        "a:00001", "a:00002", "z:00001", "narrow:00001", "emb/Adagrad", "wide:00001"]


def test_latest_entry_opens_first_among_equal_widths_and_is_replaced(tmp_path):
    meta = {"neuron": [0, 1, 2], "x": ["a", "b", "c"]}
    write_embedding(tmp_path, "a.fc", torch.eye(3), 1, meta)
    write_embedding(tmp_path, "b.fc", torch.eye(3), 1, meta)
    first = write_latest_entry(tmp_path, write_embedding(tmp_path, "b.fc", torch.eye(3), 2, meta))
    assert first.tensor_name == "(latest) b.fc:00002" and (first.tag, first.step) == ("b.fc", 2)
    assert projector_open_order(read_projector_config(tmp_path))[0] == first
    later = write_embedding(tmp_path, "a.fc", 2 * torch.eye(3), 3, meta)
    write_latest_entry(tmp_path, later)
    entries = read_projector_config(tmp_path)
    assert [e.tensor_name for e in entries if e.is_latest] == ["(latest) a.fc:00003"]
    opened = projector_open_order(entries)[0]
    assert opened.tensor_name == "(latest) a.fc:00003"
    assert (opened.tensor_path, opened.metadata_path) == (later.tensor_path, later.metadata_path)
    np.testing.assert_array_equal(read_embedding_tensor(tmp_path, opened), 2 * np.eye(3))


def test_bad_latest_entries_are_clear_errors_that_change_nothing(tmp_path):
    entry = write_embedding(tmp_path, "fc", torch.eye(3), 1)
    latest = write_latest_entry(tmp_path, entry)
    config = (tmp_path / "projector_config.pbtxt").read_bytes()
    with pytest.raises(SemvecValueError, match="is a \\(latest\\) entry already"):
        write_latest_entry(tmp_path, latest)
    with pytest.raises(SemvecValueError, match="'fc:00009' is not listed in .*write_embedding"):
        write_latest_entry(tmp_path, EmbeddingEntry("fc:00009", entry.tensor_path, (3, 3)))
    assert (tmp_path / "projector_config.pbtxt").read_bytes() == config


def result(name, spearman):
    return LayerResult(name, 0, {}, None if spearman is None else {"spearman": spearman},
                       None, None, None)


def test_opening_layer_is_the_best_fidelity_among_the_widest():
    vectors = {"conv": torch.zeros(8, 2), "fc": torch.zeros(8, 2), "logits": torch.zeros(3, 2)}
    assert opening_layer(vectors, {"conv": result("conv", .9), "fc": result("fc", .5),
                                   "logits": result("logits", 1.)}) == "conv"
    assert opening_layer(vectors, {"conv": result("conv", float("nan")),
                                   "fc": result("fc", None)}) == "fc"  # none: the last one
    assert opening_layer(vectors, {}) == "fc"


# ------------------------------------------------------------------ through the callback


def test_a_layer_wider_than_the_projector_shows_is_subsampled_with_one_message(
        tmp_path, monkeypatch, caplog):
    from lightning_semvec.projector import writer

    monkeypatch.setattr(writer, "MAX_PROJECTOR_POINTS", 3)  # features.1 has 4 neurons
    semvec = SemanticVectorCallback(layers=["features.1", "classifier.2"], dim=3, analysis=(
        AnalysisOptions(figures=False, num_classes=3)))
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=TensorBoardLogger(tmp_path, name="run"), limit_val_batches=None, max_epochs=2))
    with caplog.at_level(logging.INFO):
        trainer.fit(TinyConvNet())
    messages = [r.getMessage() for r in caplog.records if "more than the 3 points" in
                r.getMessage()]
    assert messages == ["SemanticVectorCallback: features.1 has 4 neurons, more than the 3 "
                        "points TensorBoard's projector shows, so its projector entries hold 3 "
                        "evenly spaced neurons (the 'neuron' column gives each one's index); "
                        "the knowledge file keeps them all."]
    log_dir = tmp_path / "run" / "version_0"
    entries = {e.tensor_name: e for e in read_projector_config(log_dir)}
    last = entries["features.1:00012"]
    assert last.tensor_shape == (3, 3) and entries["classifier.2:00012"].tensor_shape == (3, 3)
    columns = read_embedding_metadata(log_dir, last)
    assert columns["neuron"] == ["0", "2", "3"]
    stats = semvec.neuron_statistics["features.1"]
    assert [float(v) for v in columns["mean_activation"]] == pytest.approx(
        stats["mean_activation"][[0, 2, 3]].tolist(), rel=1e-5)
    np.testing.assert_allclose(read_embedding_tensor(log_dir, last),
                               semvec.semantic_vectors["features.1"][[0, 2, 3]].numpy(),
                               rtol=1e-6, atol=1e-7)
    assert last.sprite_dim == (32, 32)  # 3 thumbnails: a 2 x 2 grid
    from PIL import Image

    sprite = np.asarray(Image.open(log_dir / last.sprite_path))
    thumbnails = semvec._analysis.results["features.1"].thumbnails  # (4, 1, 3, 32, 32)
    expected = make_sprite(tile_images(thumbnails[[0, 2, 3]]).numpy())
    np.testing.assert_array_equal(sprite, expected)
    # Both layers now have 3 points: the opened one is the better fidelity's latest step.
    best = max(["features.1", "classifier.2"], key=lambda n: semvec.fidelity[n]["spearman"])
    opened = projector_open_order(entries.values())[0]
    assert opened.tensor_name == f"(latest) {best}:00012"
