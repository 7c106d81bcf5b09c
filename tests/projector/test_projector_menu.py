"""The projector's menu stays short and opens on a view a newcomer can read.

- the menu: each layer's newest entry, the "(latest)" entry and DEFAULT_HISTORY earlier ones;
  the files of the entries it drops are deleted, those still named are kept;
- the bookmark "2-D PCA, coloured by preferred class": written with each labelled layer,
  with every field the installed TensorBoard's projector reads when a bookmark is clicked.
"""

import json
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.analysis.projector_export import class_bookmarks
from lightning_semvec.projector import (
    DEFAULT_HISTORY,
    categorical_column,
    color_bookmark,
    neuron_metadata,
    prune_history,
    read_embedding_bookmarks,
    read_embedding_metadata,
    read_projector_config,
    write_embedding,
    write_latest_entry,
)

LAYERS = ["features.1", "classifier.2"]
CLASSES = ["top-left", "top-right", "bottom-left"]


def test_a_long_run_lists_each_layers_newest_entry_and_a_bounded_history(tmp_path):
    semvec = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(
        figures=False, class_names=CLASSES))
    pl.seed_everything(0, verbose=False)
    epochs = 8  # 8 exports of 2 layers: 16 entries, more than 2 + DEFAULT_HISTORY
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=epochs))
    trainer.fit(TinyConvNet())
    run = Path(logger.log_dir)
    entries = read_projector_config(run)
    steps = [e for e in entries if not e.is_latest]
    assert len(steps) == len(LAYERS) + DEFAULT_HISTORY
    last = 6 * epochs  # 6 steps an epoch
    assert {e.tag for e in steps if e.step == last} == set(LAYERS)
    # The history is the newest earlier exports: steps 42 down to 18 (5 exports of 2 layers).
    assert sorted({e.step for e in steps}) == list(range(last - 6 * 5, last + 1, 6))
    assert [e.tensor_name for e in entries if e.is_latest] == [f"(latest) features.1:{last:05d}"]
    # Dropped entries leave no files behind; kept ones have all theirs.
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [
        f"{s:05d}" for s in range(last - 30, last + 1, 6)]
    for e in steps:
        for path in (e.tensor_path, e.metadata_path, e.sprite_path, e.bookmarks_path):
            assert (run / path).is_file()


def test_a_second_fit_into_the_same_folder_keeps_its_own_entries_within_the_bound(tmp_path):
    """A fresh fit into the log folder of a longer one starts again at step 0: its entries
    are the newest (write order, not step), so the menu shows them, its "(latest)" entry is
    listed with its own layer entry, and the bound still holds."""
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    for epochs in (8, 2):  # steps 6..48, then 6 and 12 again
        semvec = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(
            figures=False, class_names=CLASSES))
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
            logger=logger, limit_val_batches=None, max_epochs=epochs))
        trainer.fit(TinyConvNet())
    entries = read_projector_config(logger.log_dir)
    steps = [e for e in entries if not e.is_latest]
    assert len(steps) == len(LAYERS) + DEFAULT_HISTORY
    names = [e.tensor_name for e in steps]
    assert {f"{layer}:{s:05d}" for layer in LAYERS for s in (6, 12)} <= set(names)
    # The second fit's last export is each layer's newest: the last entries listed.
    assert names[-2:] == [f"{layer}:00012" for layer in LAYERS]
    (latest,) = [e for e in entries if e.is_latest]
    assert latest.tensor_name == "(latest) features.1:00012"
    assert latest.tensor_name.removeprefix("(latest) ") in names
    run = Path(logger.log_dir)
    for e in entries:
        for path in (e.tensor_path, e.metadata_path, e.sprite_path, e.bookmarks_path):
            assert (run / path).is_file()
    listed = {e.tensor_path.split("/")[0] for e in entries}
    assert {p.name for p in run.iterdir() if p.is_dir()} == listed  # dropped: no files left


def test_every_labelled_entry_has_a_bookmark_colouring_by_preferred_class(tmp_path):
    semvec = SemanticVectorCallback(layers=LAYERS, dim=3, analysis=AnalysisOptions(
        figures=False, class_names=CLASSES))
    pl.seed_everything(0, verbose=False)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=1))
    trainer.fit(TinyConvNet())
    for entry in read_projector_config(logger.log_dir):
        (bookmark,) = read_embedding_bookmarks(logger.log_dir, entry)
        assert bookmark["label"] == "2-D PCA, coloured by preferred class"
        column = bookmark["selectedColorOptionName"]
        assert column == "preferred_class" and not bookmark["forceCategoricalColoring"]
        assert column in read_embedding_metadata(logger.log_dir, entry)
        assert bookmark["pcaComponentDimensions"] == [0, 1]  # 2-D: pictures at full size
        assert bookmark["dataSetDimensions"] == list(entry.tensor_shape)


def test_no_bookmark_without_a_preferred_class(tmp_path):
    """No labels, no class: nothing to colour by, so no bookmark (and no bookmarks file)."""
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3, analysis=AnalysisOptions(
        figures=False, label_fn=lambda batch: None))
    pl.seed_everything(0, verbose=False)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=1))
    trainer.fit(TinyConvNet())
    entries = read_projector_config(logger.log_dir)
    assert entries and all(e.bookmarks_path == "" for e in entries)
    assert not list(Path(logger.log_dir).rglob("bookmarks.txt"))


def test_many_classes_colour_by_the_class_index_one_colour_each():
    """62 class names are more than the projector's "Color by" offers for text (50): the
    bookmark colours by preferred_class_id, told to give each value its own colour."""
    names = [f"glyph {i}" for i in range(62)]
    stats = {"preferred_class": torch.arange(62), "dead": torch.zeros(62, dtype=torch.bool)}
    (bookmark,) = class_bookmarks(neuron_metadata("logits", 62, stats, names), (62, 8))
    assert bookmark["selectedColorOptionName"] == "preferred_class_id"
    assert bookmark["forceCategoricalColoring"] is True
    digits = neuron_metadata("logits", 10, {"preferred_class": torch.arange(10)})
    assert categorical_column(digits, ["preferred_class"]) == ("preferred_class", False)


def test_prune_keeps_other_tags_the_latest_entry_and_files_still_named(tmp_path):
    for step in (1, 2, 3):
        for tag in ("fc", "conv"):
            newest = write_embedding(tmp_path, tag, torch.eye(2), step,
                                     metadata={"neuron": [0, 1], "dead": ["alive", "dead"]})
    write_embedding(tmp_path, "user", torch.eye(2), 1)  # someone else's entry
    write_latest_entry(tmp_path, newest)  # conv:00003
    dropped = prune_history(tmp_path, ["fc", "conv"], history=0)
    assert [e.tensor_name for e in dropped] == ["fc:00001", "conv:00001", "fc:00002", "conv:00002"]
    names = [e.tensor_name for e in read_projector_config(tmp_path)]
    assert names == ["fc:00003", "conv:00003", "user:00001", "(latest) conv:00003"]
    assert not (tmp_path / "00002").exists() and (tmp_path / "00001" / "user").is_dir()
    assert not (tmp_path / "00001" / "fc").exists()
    assert (tmp_path / "00003" / "conv" / "tensors.tsv").is_file()
    # Nothing left to drop: nothing written.
    before = (tmp_path / "projector_config.pbtxt").stat().st_mtime_ns
    assert prune_history(tmp_path, ["fc", "conv"], history=0) == []
    assert (tmp_path / "projector_config.pbtxt").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="history must be an integer >= 0"):
        prune_history(tmp_path, ["fc"], history=-1)


def test_prune_keeps_the_files_another_entry_still_names(tmp_path):
    from lightning_semvec.projector.config import EmbeddingEntry, load_config, merge_entry
    from lightning_semvec.projector.storage import LogDir

    old = write_embedding(tmp_path, "fc", torch.eye(2), 1, metadata={"neuron": [0, 1]})
    folder = LogDir.open(tmp_path)  # another tool's entry, on fc:00001's files
    merge_entry(folder, load_config(folder), EmbeddingEntry(
        "theirs", old.tensor_path, old.tensor_shape, old.metadata_path))
    write_embedding(tmp_path, "fc", torch.eye(2), 2)
    assert [e.tensor_name for e in prune_history(tmp_path, ["fc"], history=0)] == ["fc:00001"]
    assert (tmp_path / old.tensor_path).is_file() and (tmp_path / old.metadata_path).is_file()


def test_prune_returns_the_dropped_entries_oldest_first(tmp_path):
    for step in (1, 2, 3, 4):
        write_embedding(tmp_path, "fc", torch.eye(2), step)
    dropped = prune_history(tmp_path, ["fc"], history=1)
    assert [e.tensor_name for e in dropped] == ["fc:00001", "fc:00002"]
    assert [e.tensor_name for e in read_projector_config(tmp_path)] == ["fc:00003", "fc:00004"]


@pytest.mark.parametrize("bookmarks, message", [
    ({"label": "a"}, "bookmarks must be a list of projector views"),
    (["not a view"], "bookmarks must be a list of projector views"),
    ([{"x": object()}], "A bookmark must hold JSON values only"),
])
def test_bad_bookmarks_are_one_line_and_write_nothing(tmp_path, bookmarks, message):
    with pytest.raises(ValueError, match=message):
        write_embedding(tmp_path, "fc", torch.eye(2), bookmarks=bookmarks)
    assert list(tmp_path.iterdir()) == []


def _projector_frontend() -> str:
    import tensorboard

    path = (Path(tensorboard.__file__).parent / "plugins" / "projector" / "tf_projector_plugin"
            / "projector_binary.js")
    return path.read_text(encoding="utf-8")


def _function_body(source: str, start: int) -> str:
    """The ``{...}`` block that opens at or after ``start`` (braces balanced)."""
    opening = source.index("{", start)
    depth = 0
    for i in range(opening, len(source)):
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        if depth == 0:
            return source[opening:i + 1]
    raise AssertionError("unbalanced braces")


def test_the_bookmark_gives_every_field_the_installed_projector_reads_on_a_click():
    """Clicking a bookmark runs the projector's loadState(t) and the panels'
    restoreUIFromBookmark(t): each ``t.<field>`` they read must be in the bookmark, except
    those they test for null first (a missing one throws, and the click does nothing)."""
    source = _projector_frontend()
    bodies = [_function_body(source, m.start()) for m in
              re.finditer(r"(?:loadState|restoreUIFromBookmark)\(t\)\{", source)]
    assert len(bodies) >= 3, "TensorBoard's projector frontend changed: review bookmarks.py"
    read = {name for body in bodies for name in re.findall(r"\bt\.(\w+)", body)}
    optional = {"filteredPoints", "shuffledDataIndices", "cameraDef"}  # null-checked or defaulted
    assert {"selectedColorOptionName", "pcaComponentDimensions", "projections"} <= read
    bookmark = json.loads(json.dumps(color_bookmark("preferred_class", (10, 8))))
    assert read - optional - set(bookmark) == set()
    # The colour option is a metadata column name, as the data panel lists them.
    assert bookmark["selectedColorOptionName"] == "preferred_class"
