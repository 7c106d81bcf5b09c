"""The report opens on what the network learned: the most telling layer's map and look-alikes in
words, then neuron cards, then the other layers, the Matching sections, and the file's facts."""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli import main as semvec
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.report import write_report
from lightning_semvec.report._layer_order import rank_layers

LOGIT_CLASSES = ["O", "0", "Q", "D", "C", "x"]


def _glyph_knowledge(**options) -> StaticKnowledge:
    """A conv layer that says little and logits whose vectors make O close to 0, then Q,
    then D; C alone; x dead."""
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([
        [1.0, 0.0, 0.0], [0.98, 0.2, 0.0], [0.9, 0.4, 0.1], [0.8, 0.5, 0.3],
        [0.0, 0.0, 1.0], [0.99, 0.1, 0.0],
    ])
    c = len(LOGIT_CLASSES)
    dead = torch.tensor([False] * 5 + [True])
    class_means = torch.randn(c, c, generator=g) + 4 * torch.eye(c)
    class_means[:, 5] = 0.0
    statistics = {
        "conv": {"selectivity": torch.full((8,), 0.05), "dead": torch.zeros(8, dtype=torch.bool),
                 "preferred_class": torch.arange(8) % c},
        "logits": {"selectivity": torch.tensor([0.6, 0.5, 0.4, 0.7, 0.9, 0.0]), "dead": dead,
                   "preferred_class": torch.arange(c), "class_means": class_means,
                   "class_counts": torch.full((c,), 10.0),
                   "mean_activation": torch.linspace(-1, 1, c),
                   "top_inputs": torch.randint(0, 256, (c, 3, 3, 8, 8), generator=g,
                                               dtype=torch.uint8)},
    }
    return StaticKnowledge.from_vectors(
        {"conv": torch.randn(8, 3, generator=g), "logits": logits}, statistics=statistics,
        class_names=LOGIT_CLASSES, extra={"fidelity/conv": "0.95", "fidelity/logits": "0.90"},
        **options)


def _report(tmp_path, knowledge, **options) -> str:
    path = knowledge.save(tmp_path / "k.semvec.safetensors")
    return write_report(path, tmp_path / "report", **options).read_text()


def test_the_page_opens_on_the_telling_layer_and_puts_the_facts_last(tmp_path):
    page = _report(tmp_path, _glyph_knowledge())
    # The logits (selectivity 0.52 x fidelity 0.90) say more than conv (0.05 x 0.95).
    order = [page.index(marker) for marker in (
        "<h1>What this network learned</h1>", "The most telling layer is\n<b>logits</b>",
        'id="lookalikes"', 'id="n-01_logits-0"', '<section id="00_conv"', '<section id="about">',
        "<th>knowledge file</th>", "Selectivity is the class selectivity index")]
    assert order == sorted(order)
    # The map: one labelled point per logit neuron, each linked to its card.
    svg = page[page.index("<svg class=\"map\""):page.index("</svg>")]
    assert svg.count("<circle") == 6
    assert re.findall(r'font-size="\d+" font-family="[^"]*monospace" fill="#222">([^<]+)</text>', svg) == LOGIT_CLASSES[:5]
    assert '<a href="#n-01_logits-2">' in svg


def test_the_lookalikes_read_in_class_names_and_dead_neurons_have_none(tmp_path):
    page = _report(tmp_path, _glyph_knowledge())
    chip = '<span class="chip">{}</span>'.format
    words = re.sub(r' <span class="sim">[^<]*</span>', "", page)
    assert (f"<li>{chip('O')} is closest to {chip('0')}, {chip('Q')}, {chip('D')}</li>") in words
    # x is dead: it has no line of its own, is nobody's neighbour and is named once as dead.
    assert f"<li>{chip('x')}" not in words
    lookalikes = words[words.index('id="lookalikes"'):words.index("</ul>")]
    assert chip("x") not in lookalikes
    assert f"Dead classes (constant on the validation data, so without neighbours): {chip('x')}." in page


def test_cards_show_top_inputs_class_profile_and_neighbours(tmp_path):
    knowledge = _glyph_knowledge()
    page = _report(tmp_path, knowledge)
    stats = knowledge.statistics("logits")
    cards = re.findall(r'<article id="n-01_logits-(\d)" class="card( dead)?">(.*?)</article>', page)
    assert [int(i) for i, _, _ in cards] == list(range(6))  # class order
    for i, dead, card in cards:
        images = re.findall(r'src="data:image/png;base64,([^"]+)"', card)
        if dead:
            assert images == [] and "nearest" not in card and "dead: constant" in card
            continue
        decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in images]
        expected = stats["top_inputs"][int(i)].permute(0, 2, 3, 1).numpy()
        assert len(decoded) == 3 and all(np.array_equal(d, e) for d, e in zip(decoded, expected))
        bars = re.findall(r'<rect [^>]*fill="(#[0-9a-f]+)"><title>([^<]+)</title>', card)
        assert len(bars) == 6 and [name for _, name in bars][int(i)].startswith(LOGIT_CLASSES[int(i)])
        dark = [k for k, (fill, _) in enumerate(bars) if fill == "#2b6cb0"]
        assert dark == [int(stats["preferred_class"][int(i)])]
        assert "x</span></a>" not in card and ">x<" not in card.split("nearest:")[-1]
    first = cards[0][2]
    assert re.search(r'nearest: <a href="#n-01_logits-1"><span class="chip">0</span></a>', first)


def test_a_layer_that_is_not_the_classes_is_named_by_preferred_class(tmp_path):
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    stats = {"selectivity": torch.tensor([0.9, 0.8, 0.7, 0.6]),
             "preferred_class": torch.tensor([0, 0, 2, 1]), "dead": torch.zeros(4, dtype=torch.bool)}
    knowledge = StaticKnowledge.from_vectors({"hidden": vectors}, statistics={"hidden": stats},
                                             class_names=["a", "b", "e"])
    page = re.sub(r' <span class="sim">[^<]*</span>', "", _report(tmp_path, knowledge))
    chip = '<span class="chip">{}</span>'.format
    assert (f"<li>neuron 2 (prefers {chip('e')}) is closest to 3 ({chip('b')}), 1 ({chip('a')})"
            in page)
    # Cards of a layer that is not the classes: most selective first.
    assert re.findall(r'<article id="n-00_hidden-(\d)"', page) == ["0", "1", "2", "3"]


def test_cards_are_capped_with_a_note_and_62_classes_fit(tmp_path):
    names = [chr(c) for c in [*range(48, 58), *range(65, 91), *range(97, 123)]]
    assert len(names) == 62
    g = torch.Generator().manual_seed(1)
    stats = {"class_means": torch.randn(62, 62, generator=g), "preferred_class": torch.arange(62),
             "selectivity": torch.rand(62, generator=g)}
    knowledge = StaticKnowledge.from_vectors({"logits": torch.randn(62, 8, generator=g)},
                                             statistics={"logits": stats}, class_names=names)
    page = _report(tmp_path, knowledge)
    assert page.count('class="card"') == 62 and page.count("is closest to") == 62
    assert '<ul class="many">' in page  # two columns
    capped = write_report(tmp_path / "k.semvec.safetensors", tmp_path / "capped", max_cards=10)
    text = capped.read_text()
    assert text.count('class="card"') == 10
    assert "52 more neurons have no card (max_cards=10; cards go in class order)." in text
    # The map links only the neurons that have a card.
    assert '<a href="#n-00_logits-9">' in text and '<a href="#n-00_logits-10">' not in text


def test_layers_without_cards_drop_constant_columns_and_dead_rows(tmp_path):
    stats = {"mean_activation": torch.tensor([0.5, 0.5, 0.0]), "dead": torch.tensor([False, False, True])}
    vectors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    knowledge = StaticKnowledge.from_vectors({"fc": vectors}, statistics={"fc": stats})
    page = _report(tmp_path, knowledge, card_layers=0)
    header = page[page.index("<thead><tr><th>neuron"):].split("</thead>")[0]
    assert "vector norm" not in header and "mean activation" not in header and "dead" not in header
    assert "so not a column: mean activation 0.500; vector norm 1.00." in page
    assert [line for line in page.splitlines() if line.startswith("<tr><td>")] == [
        "<tr><td>0</td><td>1 (+0.60)</td></tr>", "<tr><td>1</td><td>0 (+0.60)</td></tr>"]
    assert "not listed: 2." in page


def test_matching_sections_follow_the_layers(tmp_path):
    knowledge = StaticKnowledge.from_vectors(
        {"a/fc": torch.eye(3), "b/fc": torch.eye(3)[[2, 0, 1]]}, extra={"joint/models": '["a", "b"]'})
    page = _report(tmp_path, knowledge)
    last_layer = max(page.index('<section id="00_a_fc"'), page.index('<section id="01_b_fc"'))
    assert last_layer < page.index('<section id="matching-1"') < page.index('<section id="about">')
    assert '<a href="#matching-1">' in page


def test_rank_layers_rule():
    def knowledge(extra, **stats):
        return StaticKnowledge.from_vectors(
            {name: torch.randn(4, 2) for name in ("a", "b", "c", "d")},
            statistics={k: v for k, v in stats.items()}, extra=extra,
            learned={"a": True, "b": True, "c": True, "d": False})

    half_dead = {"selectivity": torch.full((4,), 0.8), "dead": torch.tensor([True, True, False, False])}
    ranked = rank_layers(knowledge({"fidelity/a": "0.9", "fidelity/b": "0.9", "fidelity/c": "oops"},
                                   a={"selectivity": torch.full((4,), 0.5)}, b=half_dead))
    # a: 0.5 x 0.9 = 0.45; b: its dead neurons count 0, so 0.4 x 0.9 = 0.36 (not 0.72);
    # c: no factor it can read; d: not learned.
    assert [(s.name, round(s.score, 2) if s.score == s.score else None) for s in ranked] == [
        ("a", 0.45), ("b", 0.36), ("c", None)]
    assert math.isnan(ranked[2].fidelity) and ranked[1].dead == 2
    # A negative fidelity counts 0; a missing factor is left out; ties keep the file order.
    ranked = rank_layers(knowledge({"fidelity/a": "-0.3", "fidelity/b": "0.5", "fidelity/c": "0.5"}))
    assert [(s.name, s.score) for s in ranked] == [("b", 0.5), ("c", 0.5), ("a", 0.0)]


def test_bad_card_options_fail_before_anything_is_written(tmp_path):
    path = StaticKnowledge.from_vectors({"fc": torch.eye(3)}).save(tmp_path / "k.semvec.safetensors")
    for option in ("card_layers", "max_cards"):
        with pytest.raises(SemvecValueError, match=option):
            write_report(path, tmp_path / "out", **{option: -1})
    assert not (tmp_path / "out").exists()


def test_semvec_report_takes_the_card_options(tmp_path, capsys):
    assert semvec(["report", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--card_layers" in help_text and "--max_cards" in help_text
    path = _glyph_knowledge().save(tmp_path / "k.semvec.safetensors")
    assert semvec(["report", str(path), str(tmp_path / "out"), "--max_cards", "2"]) == 0
    assert (tmp_path / "out" / "index.html").read_text().count('<article ') == 2


def test_nearest_neighbours_leave_dead_neurons_out():
    from lightning_semvec.functional import semantic_similarity
    from lightning_semvec.report import nearest_neighbours

    vectors = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    alive = torch.arange(30) % 4 != 0
    idx, sim = nearest_neighbours(vectors, k=3, chunk=7, alive=alive)
    s = semantic_similarity(vectors).fill_diagonal_(-2.0)
    s[:, ~alive] = -3.0
    dense = s.topk(3, dim=1)
    assert torch.equal(idx[alive], dense.indices[alive])
    torch.testing.assert_close(sim[alive], dense.values[alive])
    assert bool((idx[~alive] == -1).all()) and bool(sim[~alive].isnan().all())
    # Fewer alive neighbours than k: the missing places are -1 and NaN.
    two = nearest_neighbours(torch.eye(3), k=2, alive=torch.tensor([True, True, False]))[0]
    assert two.tolist() == [[1, -1], [0, -1], [-1, -1]]


def test_a_logit_card_marks_its_own_class_and_the_class_it_prefers(tmp_path):
    knowledge = _glyph_knowledge()
    stats = dict(knowledge.statistics("logits"))
    stats["preferred_class"] = torch.tensor([2, 1, 2, 3, 4, 0])  # O's logit responds most to Q
    knowledge = StaticKnowledge.from_vectors(
        {"logits": knowledge.vectors("logits")}, statistics={"logits": stats},
        class_names=LOGIT_CLASSES)
    page = _report(tmp_path, knowledge)
    for i, other in ((0, 2), (1, None)):
        card = re.search(rf'<article id="n-00_logits-{i}" class="card">(.*?)</article>', page).group(1)
        fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]+)"><title>', card)
        assert [k for k, f in enumerate(fills) if f == "#2b6cb0"] == [i]
        assert [k for k, f in enumerate(fills) if f == "#dd8452"] == ([other] if other else [])


def test_the_map_caption_names_dead_neurons_only_when_there_are_some(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert "Hollow grey: dead." in _report(tmp_path / "a", _glyph_knowledge())
    alive = StaticKnowledge.from_vectors(
        {"fc": torch.randn(4, 3)}, statistics={"fc": {"dead": torch.zeros(4, dtype=torch.bool)}})
    assert "Hollow grey" not in _report(tmp_path / "b", alive)
