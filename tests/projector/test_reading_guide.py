"""The text card "How to read the semantic vectors": written by a real fit once per log folder,
through the logger's SummaryWriter, read back from the event file as TensorBoard's Text tab
reads it, and naming the layers and the parts the callback's options write."""

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.analysis._text_card import TEXT_TAG, reading_guide
from lightning_semvec.projector import DEFAULT_HISTORY

LAYERS = ["features.1", "classifier.2"]


def _cards(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    tag = f"{TEXT_TAG}/text_summary"  # add_text's tag in the event file
    if tag not in events.Tags()["tensors"]:
        return []
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]


def _fit(logger, semvec, epochs=2):
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=epochs))
    trainer.fit(TinyConvNet())


def test_a_fit_writes_one_card_naming_its_layers_and_every_tab(tmp_path):
    semvec = SemanticVectorCallback(layers=LAYERS, dim=3)
    logger = TensorBoardLogger(tmp_path, name="run", default_hp_metric=False)
    _fit(logger, semvec, epochs=2)  # analysed at steps 6 and 12, then exported at the end
    ((step, text),) = _cards(logger.log_dir)
    assert step == 6  # the first export
    assert text == reading_guide(semvec.vectors.vectors(), semvec.analysis_options)
    for needed in ("### Scalars", "### Images (IMAGES tab, at the end of `fit`)", "### Projector",
                   "features.1 (4 neurons), classifier.2 (3 neurons) has a small vector",
                   "**Good: 0.9 or more.**", "finished to the best fit",
                   "Each point is a **neuron**, not an input; its picture is",
                   "2-D PCA, coloured by preferred class", f"the {DEFAULT_HISTORY} newest earlier",
                   "one point every validation epoch", "`semvec/<layer>/pca`"):
        assert needed in text, needed


def test_a_second_fit_into_another_folder_gets_its_own_card(tmp_path):
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3,
                                    analysis=AnalysisOptions(figures=False))
    first = TensorBoardLogger(tmp_path, name="run", version=0)
    second = TensorBoardLogger(tmp_path, name="run", version=1)
    _fit(first, semvec, epochs=1)
    _fit(first, semvec, epochs=2)  # the same folder again: no second card
    _fit(second, semvec, epochs=1)
    assert len(_cards(first.log_dir)) == 1 and len(_cards(second.log_dir)) == 1


def test_the_card_leaves_out_what_the_options_switch_off(tmp_path):
    options = AnalysisOptions(figures=False, projector=False, log_every_n_epochs=2,
                              finish_vectors=False)
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3, analysis=options)
    logger = TensorBoardLogger(tmp_path, name="run")
    _fit(logger, semvec, epochs=2)
    ((_, text),) = _cards(logger.log_dir)  # no projector, no figures: the scalars still need it
    assert "### Scalars" in text and "one point every 2 validation epochs" in text
    assert "### Images" not in text and "### Projector" not in text
    assert "finished to the best fit" not in text
    with_figures = reading_guide({"fc": torch.zeros(3, 2)}, AnalysisOptions(
        figures="epoch", projector_images="off"))
    assert "### Images (IMAGES tab, after each analysed validation epoch)" in with_figures
    assert "not an input." in with_figures and "its picture" not in with_figures


def test_no_card_without_a_tensorboard_logger(tmp_path):
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3,
                                    analysis=AnalysisOptions(figures=False))
    _fit(CSVLogger(tmp_path), semvec, epochs=1)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_a_wide_model_names_its_first_layers_and_counts_the_rest():
    many = {f"block{i}": torch.zeros(4, 2) for i in range(20)}
    text = reading_guide(many, AnalysisOptions())
    assert "block7 (4 neurons), and 12 more" in text and "block8" not in text
