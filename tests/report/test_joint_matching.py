"""The report's Matching section reads: the CKA heatmap and what it says, each matched neuron's
preferred class, hubs flagged and explained, and both models' neurons in one PCA map."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from lightning_semvec import KnowledgeFileError, StaticKnowledge, write_report
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.knowledge.joint_space import CKA_KEY, MODELS_KEY, cka_record
from lightning_semvec.report._joint_figures import (
    MAX_JOINED_PAIRS,
    cka_heatmap,
    joint_pca_map,
    shortened,
)
from lightning_semvec.report._joint_reading import matching_hubs, most_like, preferred_classes
from lightning_semvec.report.matching import matching_sections

E = torch.eye(3)
#: a/fc: five neurons along e0 (all nearest to b's neuron 0), one along e1; b/fc: e0, e1, e2, -e0.
A_FC = torch.stack([E[0] + 0.01 * k * E[2] for k in range(5)] + [E[1]])
B_FC = torch.stack([E[0], E[1], E[2], -E[0]])


def hub_knowledge(cka: str | None = None, classes: bool = True) -> StaticKnowledge:
    extra = {MODELS_KEY: '["a", "b"]'}
    if cka is not None:
        extra[CKA_KEY] = cka
    statistics = {"a/fc": {"preferred_class": torch.tensor([0, 0, 1, 0, 0, 2])},
                  "b/fc": {"preferred_class": torch.tensor([0, 1, 2, 1]),
                           "dead": torch.tensor([False, False, False, True])}} if classes else None
    return StaticKnowledge.from_vectors(
        {"a/fc": A_FC, "b/fc": B_FC}, extra=extra, statistics=statistics,
        class_names=["cat", "dog", "emu"] if classes else None)


def section_of(knowledge: StaticKnowledge, max_rows: int = 10) -> str:
    (_, _, _, body), = matching_sections(knowledge, max_rows)
    return body


def rows_of(section: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(<td.*?)</tr>", section)]


def test_a_hub_is_flagged_in_the_table_and_explained_in_one_sentence():
    section = section_of(hub_knowledge())
    sentence = ("<li>b neuron fc #0 is the best match of 5 a neurons: it carries what they share, "
                "so its matches are not one-to-one.</li>")
    assert sentence in section
    # 6 matched neurons of a over 4 neurons of b: an even share of 1.5, so a hub needs more
    # than max(3, 3 x 1.5) = 4.5.
    assert "(here: more than 4.5)." in section
    rows = rows_of(section)
    assert len(rows) == 6
    for row in rows:
        neuron_a, class_a, neuron_b, class_b, _, _, _, best_match_of = row
        assert best_match_of == ("5 (hub)" if neuron_b == "fc #0" else "1")
        assert class_a == ["cat", "cat", "dog", "cat", "cat", "emu"][int(neuron_a.split("#")[1])]
        assert class_b == {"fc #0": "cat", "fc #1": "dog"}[neuron_b]
    assert "Preferred class: the class on which" in section


def test_without_classes_there_are_no_class_columns_and_without_cka_a_note():
    section = section_of(hub_knowledge(classes=False))
    assert "<th>preferred class</th>" not in section
    assert all(len(row) == 6 for row in rows_of(section))
    assert "This file stores no CKA between the layers" in section
    assert 'alt="linear CKA' not in section
    assert 'alt="PCA map of the neurons of a and b"' in section  # the map needs no CKA


def test_the_cka_heatmap_and_its_reading_are_in_the_section():
    cka = cka_record(["a/fc", "b/fc"], torch.tensor([[1.0, 0.8], [0.8, 1.0]]), 7, "readout")
    section = section_of(hub_knowledge(cka))
    assert "<li>a/fc is most like b/fc (CKA 0.80).</li>" in section
    assert ("of the neurons as read for the joint space (a conv layer&#x27;s channel means), with "
            "the unbiased minibatch estimator (Nguyen et al., 2021) over 7 minibatches") in section
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', section)
    assert [alt for _, alt in images] == ["linear CKA between the layers of a and b",
                                          "PCA map of the neurons of a and b"]
    for data, _ in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.width >= 400 and image.height >= 250


def test_a_report_of_a_malformed_cka_is_refused_and_writes_nothing(tmp_path):
    bad = '{"layers":["a/fc","b/fc"],"cka":[[1.0,0.8]],"minibatches":7,"features":"flattened"}'
    path = hub_knowledge(bad).save(tmp_path / "k.semvec.safetensors")
    with pytest.raises(KnowledgeFileError, match="'joint/cka' entry must hold a 2 x 2 matrix"):
        write_report(path, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_the_hub_rule():
    alive = torch.ones(8, dtype=torch.bool)
    # Two models of one width: an even share of 1; a neuron matched by 4 is a hub, by 3 is not.
    hubs = matching_hubs(torch.tensor([0, 0, 0, 0, 1, 1, 1, 2]), alive)
    assert hubs.hubs == [0] and hubs.threshold == 3.0 and hubs.even_share == 1.0
    assert hubs.counts.tolist() == [4, 3, 1, 0, 0, 0, 0, 0]
    # A teacher four times as wide: an even share of 4; 12 is not a hub, 13 is.
    spread = torch.arange(32) % 8
    assert matching_hubs(spread, alive).hubs == []
    crowded = torch.cat([torch.zeros(13, dtype=torch.long), torch.arange(19) % 7 + 1])
    assert matching_hubs(crowded, alive).hubs == [0]
    assert matching_hubs(torch.cat([torch.zeros(12, dtype=torch.long), torch.arange(20) % 7 + 1]),
                         alive).hubs == []
    # Dead neurons of b count in no share; unmatched neurons of a (-1) in no count.
    half = torch.tensor([True] * 4 + [False] * 4)
    hubs = matching_hubs(torch.tensor([0, 0, 0, 0, 0, 0, 0, 1, 2, 3, -1, -1]), half)
    assert hubs.even_share == 2.5 and hubs.threshold == 7.5 and hubs.hubs == []
    # A student wider than its teacher (an even share below 1): matched by 3 is no hub yet.
    few = matching_hubs(torch.tensor([0, 0, 0, 1]), torch.ones(20, dtype=torch.bool))
    assert few.threshold == 3.0 and few.hubs == []
    # Most matched first.
    hubs = matching_hubs(torch.tensor([1] * 5 + [0] * 6 + [2]), torch.ones(20, dtype=torch.bool))
    assert hubs.hubs == [0, 1]


def test_preferred_classes_and_most_like():
    knowledge = hub_knowledge()
    assert preferred_classes(knowledge, ["b/fc"]) == ["cat", "dog", "emu", ""]  # dead: none
    assert preferred_classes(hub_knowledge(classes=False), ["a/fc"]) is None
    block = torch.tensor([[0.2, 0.9, float("nan")], [float("nan")] * 3], dtype=torch.float64)
    assert most_like(block, ["t/a", "t/b"], ["s/x", "s/y", "s/z"]) == [
        "t/a is most like s/y (CKA 0.90)", "t/b has no CKA (constant on the data)"]


def test_the_heatmap_writes_every_value_with_readable_labels():
    cka = torch.tensor([[0.91, 0.2, float("nan")], [0.3, 0.65, 0.1]], dtype=torch.float64)
    long = "net.features.block4.layer2.conv3.weight_norm"
    figure = cka_heatmap(cka, ["conv", long], ["x", "y", "z"], row_title="teacher",
                         column_title="student", title="CKA")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.texts] == ["0.91", "0.20", "n/a", "0.30", "0.65", "0.10"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv", shortened(long)]
    assert len(shortened(long)) == 32 and shortened(long).startswith("net.features.") and "…" in shortened(long)
    assert ax.get_xlabel() == "layers of student" and ax.get_ylabel() == "layers of teacher"
    # Dark cells get white text, light ones black.
    colours = [t.get_color() for t in ax.texts]
    assert colours[0] == "black" and colours[1] == "white"
    bigger = cka_heatmap(torch.rand(12, 12), [f"l{i}" for i in range(12)],
                         [f"m{i}" for i in range(12)], row_title="a", column_title="b", title="t")
    assert bigger.get_size_inches()[0] > figure.get_size_inches()[0]
    with pytest.raises(SemvecValueError, match=r"cka must be \(rows, columns\) = \(2, 2\), got \(2, 3\)"):
        cka_heatmap(cka, ["a", "b"], ["x", "y"], row_title="a", column_title="b", title="t")


def test_the_joint_map_has_both_models_leaves_out_the_dead_and_joins_pairs():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 4, generator=g), torch.randn(7, 4, generator=g)
    a[3] = 0.0  # dead
    figure = joint_pca_map(a, b, ("teacher", "student"), [(0, 0), (3, 1), (4, 2)], title="t")
    assert figure is not None
    ax = figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["teacher (9 neurons)", "student (7 neurons)", "mutual match (2)"]  # 3 is dead
    points = [collection.get_offsets().shape[0] for collection in ax.collections[1:]]
    assert points == [9, 7]
    many = [(i, i % 7) for i in range(10)] * 30
    figure = joint_pca_map(a, b, ("teacher", "student"), many, title="t")
    assert figure is not None and len(figure.axes[0].collections[0].get_segments()) == MAX_JOINED_PAIRS
    assert joint_pca_map(torch.zeros(3, 2), torch.tensor([[1.0, 0.0]]), ("a", "b"), title="t") is None
