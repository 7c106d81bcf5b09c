"""The text card "How to read the semantic vectors": written once per run, through the logger's
SummaryWriter, and read back from the event file as TensorBoard's Text tab reads it."""

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis._text_card import TEXT_TAG, log_reading_guide, reading_guide
from lightning_semvec.projector import DEFAULT_HISTORY

VECTORS = {"net.features.0": torch.zeros(16, 8), "net.classifier.3": torch.zeros(10, 8)}


def _cards(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    tag = f"{TEXT_TAG}/text_summary"  # add_text's tag in the event file
    if tag not in events.Tags()["tensors"]:
        return []
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)]


def test_the_card_is_written_once_per_run_and_says_how_to_read_each_tab(tmp_path):
    cache = WarningCache("SemanticVectorCallback")
    first = TensorBoardLogger(tmp_path, name="run", version=0)
    second = TensorBoardLogger(tmp_path, name="run", version=1)
    written = [log_reading_guide(first.experiment, VECTORS, step, cache) for step in (6, 12)]
    written.append(log_reading_guide(second.experiment, VECTORS, 6, cache))  # another run
    for logger in (first, second):
        logger.experiment.flush()
    assert written == [True, False, True]
    ((step, text),) = _cards(first.log_dir)
    assert step == 6 and text == reading_guide(VECTORS)
    assert len(_cards(second.log_dir)) == 1
    for needed in ("### Scalars", "### Images", "### Projector",
                   "net.features.0 (16 neurons), net.classifier.3 (10 neurons)",
                   "**Good: 0.9 or more.**", "Each point is a **neuron**",
                   "2-D PCA, coloured by preferred class", f"the {DEFAULT_HISTORY} newest earlier",
                   "`semvec/<layer>/fidelity`", "`semvec/<layer>/pca`"):
        assert needed in text, needed


def test_a_wide_model_names_its_first_layers_and_counts_the_rest():
    many = {f"block{i}": torch.zeros(4, 2) for i in range(20)}
    text = reading_guide(many)
    assert "block7 (4 neurons), and 12 more" in text and "block8" not in text
