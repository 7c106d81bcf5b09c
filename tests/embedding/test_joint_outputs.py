"""What a joint knowledge gives: the report's Matching section, one projector entry with a
``model`` column, and ``semvec embed --compare``."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from tiny_models import QUIET, data, mlp, permuted

from lightning_semvec import StaticKnowledge, embed_models, write_report
from lightning_semvec.cli._main import main
from lightning_semvec.functional import match_neurons
from lightning_semvec.knowledge.joint_space import (
    MODELS_KEY,
    joint_models,
    model_vectors,
)
from lightning_semvec.projector import read_embedding_metadata, read_embedding_tensor
from lightning_semvec.projector.joint import (
    JOINT_METADATA_COLUMNS,
    write_joint_projector,
)


@pytest.fixture(scope="module")
def joint_file(tmp_path_factory):
    """A teacher of 300 + 12 hidden units and its permuted, slightly moved copy, embedded
    together with class statistics."""
    a = mlp(0, (300, 12))
    b, perms = permuted(a, seed=1, noise=0.02)
    knowledge = embed_models({"teacher": a, "student": b}, data(), layers=["1", "3"], dim=16,
                             num_classes=3, class_names=["x", "y", "z"], trainer=QUIET)
    return knowledge.save(tmp_path_factory.mktemp("joint") / "joint.semvec.safetensors"), perms


def table_rows(section: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row)
            for row in re.findall(r"<tr>(<td.*?)</tr>", section)]


def table(section: str) -> list[dict[str, str]]:
    """The Matching table's rows by column (the two "preferred class" columns as "class of a"
    and "class of b")."""
    head = re.findall(r"<th>(.*?)</th>", section[section.index("<table>"):].split("</thead>")[0])
    names, seen = [], 0
    for name in head:
        if name == "preferred class":
            name, seen = ("class of a", "class of b")[seen], seen + 1
        names.append(name)
    return [dict(zip(names, row, strict=True)) for row in table_rows(section)]


def test_report_has_a_matching_table_sorted_by_correlation(joint_file, tmp_path):
    path, (perm1, _) = joint_file
    page = write_report(path, tmp_path / "report", max_matching_rows=40).read_text()
    assert 'href="#matching-1">Matching: teacher → student</a>' in page
    section = page[page.index('<section id="matching-1">'):]
    section = section[: section.index("</section>")]
    assert ("<th>neuron of teacher</th><th>preferred class</th><th>best neuron of student</th>\n"
            "<th>preferred class</th><th>cosine</th><th>correlation</th><th>mutual</th>"
            "<th>best match of</th>") in section
    rows = table(section)
    assert len(rows) == 40  # 312 matched neurons, the best 40 listed, and a note for the rest
    knowledge = StaticKnowledge.load(path)
    assert not any(knowledge.statistics(n)["dead"].any() for n in knowledge.layer_names)
    assert "272 more matched neurons are not listed (max_matching_rows=40)" in section
    correlations = [float(row["correlation"]) for row in rows]
    assert correlations == sorted(correlations, reverse=True)
    names = knowledge.class_names
    for row in rows:
        layer, index = row["neuron of teacher"].split(" #")
        if layer == "1":  # the permuted copy of the unit
            assert row["best neuron of student"] == f"1 #{int(perm1.argsort()[int(index)])}"
        assert float(row["cosine"]) > 0.9 and row["mutual"] == "yes"
        assert row["best match of"] == "1"  # one-to-one: no hub
        # each neuron's own preferred class, from its model's statistics
        other_layer, other_index = row["best neuron of student"].split(" #")
        for model, key, (lay, i) in (("teacher", "class of a", (layer, index)),
                                     ("student", "class of b", (other_layer, other_index))):
            assert row[key] == names[int(knowledge.statistics(f"{model}/{lay}")["preferred_class"][int(i)])]
    assert '<ul class="hubs">' not in section and "A hub is" not in section  # none explained
    # The CKA: a heatmap and what it says; the permuted copy's layers are its original's.
    assert 'alt="linear CKA between the layers of teacher and student"' in section
    assert "<li>teacher/1 is most like student/1 (CKA 1.00).</li>" in section
    assert "<li>teacher/3 is most like student/3 (CKA 1.00).</li>" in section
    assert 'alt="PCA map of the neurons of teacher and student"' in section
    assert re.search(r"312 of 312 matched neurons of teacher are mutual nearest neighbours; "
                     r"median correlation (0\.99\d|1\.000)\.", section)
    # The layers keep their own sections.
    assert 'id="00_teacher_1"' in page and 'id="03_student_3"' in page


def test_report_of_other_knowledge_has_no_matching_section(tmp_path):
    plain = StaticKnowledge.from_vectors({"fc": torch.randn(5, 3)})
    odd = StaticKnowledge.from_vectors(  # names a model without layers: not a joint space
        {"a/fc": torch.randn(5, 3)}, extra={MODELS_KEY: '["a", "b"]'})
    for i, knowledge in enumerate((plain, odd)):
        page = write_report(knowledge.save(tmp_path / f"{i}.semvec.safetensors"),
                            tmp_path / f"report{i}").read_text()
        assert "Matching" not in page


def test_sketched_joint_space_report_sorts_by_cosine_and_says_why(tmp_path):
    a = mlp(0)
    b, _ = permuted(a, seed=1, noise=0.02)
    knowledge = embed_models({"a": a, "b": b}, data(), ["1"], dim=8, exact_max_neurons=8,
                             trainer=QUIET)
    page = write_report(knowledge.save(tmp_path / "k.semvec.safetensors"), tmp_path / "r")
    section = page.read_text().split('<section id="matching-1">')[1]
    assert "stores no correlations (the joint similarity was sketched" in section
    rows = table(section.split("</section>")[0])
    cosines = [float(row["cosine"]) for row in rows]
    assert cosines == sorted(cosines, reverse=True)
    assert all(row["correlation"] == "" for row in rows)  # no correlation column values


def test_one_projector_entry_holds_both_models_with_a_model_column(joint_file, tmp_path):
    path, _ = joint_file
    knowledge = StaticKnowledge.load(path)
    entry = write_joint_projector(tmp_path, knowledge)
    metadata = read_embedding_metadata(tmp_path, entry)
    assert list(metadata) == list(JOINT_METADATA_COLUMNS)
    assert metadata["model"] == ["teacher"] * 312 + ["student"] * 312
    assert metadata["layer"][0] == "teacher/1" and metadata["layer"][-1] == "student/3"
    assert metadata["neuron"][300] == "0" and metadata["label"][0].startswith("teacher/1 #0")
    assert set(metadata["preferred_class"]) <= {"x", "y", "z", ""}
    layers = joint_models(knowledge)
    vectors = torch.cat([model_vectors(knowledge, layers[m]) for m in layers])
    written = torch.as_tensor(read_embedding_tensor(tmp_path, entry))
    assert torch.allclose(written, vectors, atol=1e-6)
    # Other knowledge: nothing written.
    assert write_joint_projector(tmp_path / "plain", StaticKnowledge.from_vectors(
        {"fc": torch.randn(4, 2)})) is None
    assert not (tmp_path / "plain").exists()


def test_semvec_embed_compare_puts_two_checkpoints_in_one_space(
        checkpoint, tmp_path, capsys):
    other = shutil.copy(checkpoint, tmp_path / "student.ckpt")  # the same weights: a sanity check
    out = tmp_path / "out"
    assert main(["embed", str(checkpoint), "digits", "net.classifier.1", str(out), "--dim", "8",
                 "--accelerator", "cpu", "--split", "val", "--trust-checkpoint",
                 "--compare", str(other)]) == 0
    path = out / "epoch=0-step=3-vs-student.semvec.safetensors"
    assert f"Knowledge file: {path}" in capsys.readouterr().out
    knowledge = StaticKnowledge.load(path)
    assert knowledge.layer_names == ["epoch=0-step=3/net.classifier.1", "student/net.classifier.1"]
    a, b = (knowledge[name].vectors for name in knowledge.layer_names)
    matching = match_neurons(a, b)
    alive = matching.indices[:, 0] >= 0
    assert alive.sum() > 16
    assert torch.equal(matching.indices[alive, 0], torch.arange(32)[alive])  # itself
    assert "Matching: epoch=0-step=3 → student" in (out / "report" / "index.html").read_text()
    config = (out / "projector" / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "joint:00000"' in config


def test_semvec_embed_compare_options_need_compare(checkpoint, tmp_path, capsys):
    assert main(["embed", str(checkpoint), "digits", "net.classifier.1", str(tmp_path / "o"),
                 "--compare_layers", "net.classifier.1", "--trust-checkpoint"]) == 2
    assert "--compare_layers goes with --compare (the second model)" in capsys.readouterr().err
