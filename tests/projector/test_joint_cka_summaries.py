"""Beside the projector's joint entry: the CKA heatmap (Images tab) and table (Text tab) in one
TensorBoard event file of the same run directory, read back by TensorBoard's own reader."""

from __future__ import annotations

import io

import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_semvec import StaticKnowledge
from lightning_semvec.knowledge.joint_space import CKA_KEY, MODELS_KEY, cka_record
from lightning_semvec.projector import read_projector_config
from lightning_semvec.projector.joint import write_joint_cka, write_joint_projector

LAYERS = ["t/conv|1", "t/fc", "s/conv", "s/fc", "u/fc"]
MATRIX = torch.tensor([[1.0, 0.4, 0.9, 0.3, 0.2],
                       [0.4, 1.0, 0.35, 0.8, 0.1],
                       [0.9, 0.35, 1.0, 0.5, float("nan")],
                       [0.3, 0.8, 0.5, 1.0, 0.6],
                       [0.2, 0.1, float("nan"), 0.6, 1.0]], dtype=torch.float64)


def three_models(cka: bool = True) -> StaticKnowledge:
    extra = {MODELS_KEY: '["t", "s", "u"]'}
    if cka:
        extra[CKA_KEY] = cka_record(LAYERS, MATRIX, 6)
    return StaticKnowledge.from_vectors({name: torch.eye(3) for name in LAYERS}, extra=extra)


def read(run) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_the_joint_entry_comes_with_the_cka_of_the_first_model_and_each_other(tmp_path):
    entry = write_joint_projector(tmp_path, three_models(), step=3)
    assert entry is not None and [e.tag for e in read_projector_config(tmp_path)] == ["joint"]
    events = read(tmp_path)
    tags = events.Tags()
    assert tags["images"] == ["semvec/joint/cka_t_vs_s", "semvec/joint/cka_t_vs_u"]
    assert tags["tensors"] == ["semvec/joint/cka_t_vs_s_table", "semvec/joint/cka_t_vs_u_table"]
    (image,) = events.Images("semvec/joint/cka_t_vs_s")
    assert image.step == 3
    png = Image.open(io.BytesIO(image.encoded_image_string))
    assert png.format == "PNG" and (png.width, png.height) == (image.width, image.height)
    (table,) = events.Tensors("semvec/joint/cka_t_vs_s_table")
    text = table.tensor_proto.string_val[0].decode()
    assert "of each layer's whole output per input, flattened, unbiased minibatch estimator over 6 " \
           "minibatches" in text
    # rows: t's layers; columns: s's; a "|" in a name escaped so the Markdown table holds
    assert text.splitlines()[2:] == ["| layer of t | conv | fc |", "|---|---:|---:|",
                                     "| conv\\|1 | 0.900 | 0.300 |", "| fc | 0.350 | 0.800 |"]
    (table,) = events.Tensors("semvec/joint/cka_t_vs_u_table")
    assert table.tensor_proto.string_val[0].decode().splitlines()[-2:] == [
        "| conv\\|1 | 0.200 |", "| fc | 0.100 |"]


def test_writing_again_replaces_the_file_and_no_cka_writes_none(tmp_path):
    knowledge = three_models()
    assert write_joint_cka(tmp_path, knowledge) == ["semvec/joint/cka_t_vs_s", "semvec/joint/cka_t_vs_u"]
    assert write_joint_cka(tmp_path, knowledge) == ["semvec/joint/cka_t_vs_s", "semvec/joint/cka_t_vs_u"]
    assert len(list(tmp_path.glob("*tfevents*"))) == 1
    assert len(read(tmp_path).Images("semvec/joint/cka_t_vs_s")) == 1
    # A joint knowledge from before the CKA, and any other knowledge: nothing written.
    assert write_joint_cka(tmp_path / "old", three_models(cka=False)) == []
    write_joint_projector(tmp_path / "old", three_models(cka=False))
    assert not list((tmp_path / "old").glob("*tfevents*"))
    assert write_joint_cka(tmp_path / "plain", StaticKnowledge.from_vectors({"fc": torch.eye(2)})) == []
    assert not (tmp_path / "plain").exists()
