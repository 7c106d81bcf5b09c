"""The report says how far the vectors explain what the network does: the logits against the
network's held-out confusion (when given), every layer with class means against its class
profiles, each with a verdict drawn from its own numbers."""

from __future__ import annotations

import re

import pytest
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from lightning_semvec import StaticKnowledge
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.agreement import (
    SimilarityAgreement,
    class_profile_similarity,
    similarity_agreement,
    symmetric_confusion,
)
from lightning_semvec.report import write_report
from lightning_semvec.report._agreement import TOP_PAIRS, verdict

CLASSES = ["O", "0", "Q", "D", "l", "I", "1", "x"]  # x is dead


def _knowledge() -> StaticKnowledge:
    g = torch.Generator().manual_seed(0)
    c = len(CLASSES)
    dead = torch.tensor([False] * (c - 1) + [True])
    class_means = torch.randn(c, c, generator=g) + 3 * torch.eye(c)
    class_means[:, -1] = 0.0
    hidden_means = torch.randn(c, 9, generator=g)
    statistics = {
        "logits": {"dead": dead, "class_means": class_means, "preferred_class": torch.arange(c),
                   "selectivity": torch.full((c,), 0.5)},
        # hidden neuron 0 is marked dead though its class means vary: it is left out all the same
        "hidden": {"dead": torch.arange(9) == 0, "class_means": hidden_means,
                   "selectivity": torch.full((9,), 0.1)},
    }
    return StaticKnowledge.from_vectors(
        {"hidden": hidden_means.T + 0.3 * torch.randn(9, c, generator=g),
         "logits": torch.randn(c, 4, generator=g)},
        statistics=statistics, class_names=CLASSES)


def _confusion() -> torch.Tensor:
    """Held-out counts of a classifier that mistakes O for 0 and l for I often."""
    g = torch.Generator().manual_seed(1)
    target = torch.arange(len(CLASSES)).repeat(20)
    preds = torch.where(torch.rand(target.shape, generator=g) < 0.7, target,
                        torch.randint(0, len(CLASSES), target.shape, generator=g))
    preds[(target == 0) & (torch.arange(target.numel()) % 3 == 0)] = 1
    preds[(target == 4) & (torch.arange(target.numel()) % 2 == 0)] = 5
    return multiclass_confusion_matrix(preds, target, num_classes=len(CLASSES))


def _paragraph(page: str, reference: str, after: str = "") -> tuple[str, dict[str, str]]:
    start = page.index(after) if after else 0
    match = re.compile(rf'<p class="explain" data-reference="{reference}"([^>]*)>(.*?)</p>').search(page, start)
    assert match is not None
    return match.group(2), dict(re.findall(r'data-(\w+)="([^"]*)"', match.group(1)))


def _expected_numbers(text: str, attrs: dict[str, str], result: SimilarityAgreement) -> None:
    assert float(attrs["spearman"]) == result.spearman  # the very number, not a rounding
    assert int(attrs["shared"]) == round(result.top_overlap * result.top_k)
    assert int(attrs["pairs"]) == result.pairs
    assert f"Spearman {result.spearman:+.2f}" in text and f"({result.pairs} pairs)" in text
    assert (f"{round(result.top_overlap * result.top_k)} of the {TOP_PAIRS} most alike pairs" in text
            and f"(chance: {result.chance_overlap * TOP_PAIRS:.2f})" in text)
    assert f"<b>The vectors {verdict(result)} " in text


def test_the_logits_are_held_against_the_confusion_given(tmp_path):
    knowledge = _knowledge()
    path = knowledge.save(tmp_path / "k.semvec.safetensors")
    confusion = _confusion()
    page = write_report(path, tmp_path / "report", confusion=confusion).read_text()
    # Said once, on the first screen: the first layer's cards do not repeat it.
    assert page.count('data-reference="confusion"') == 1
    alive = ~knowledge.statistics("logits")["dead"]
    mistaken = symmetric_confusion(confusion)
    expected = similarity_agreement(knowledge.semantic_similarity("logits"), mistaken,
                                    top_k=TOP_PAIRS, keep=alive)
    # On the first screen, under the map, before the cards.
    text, attrs = _paragraph(page, "confusion")
    assert page.index('id="lookalikes"') < page.index('id="explain"') < page.index(
        f"data-spearman={attrs['spearman']!r}".replace("'", '"')) < page.index('<article id="n-')
    assert "Do the vectors explain what the network does?" in page
    _expected_numbers(text, attrs, expected)
    # Where they explain: the shared pairs; where not: the most confused pairs they miss.
    top = {tuple(p) for p in expected.top_pairs.tolist()}
    ref = [tuple(p) for p in expected.reference_pairs.tolist()]
    chip = '<span class="chip">{}</span>'.format
    words = re.sub(r' <span class="sim">[^<]*</span>', "", text)
    _, _, explain = words.partition("Where they explain: ")
    explain, _, missed = explain.partition("Where they do not: ")

    def pairs(part: str) -> list[tuple[int, int]]:
        found = re.findall(r'<span class="chip">([^<]+)</span>/<span class="chip">([^<]+)</span>', part)
        return [(CLASSES.index(a), CLASSES.index(b)) for a, b in found]

    assert pairs(explain) == [p for p in ref if p in top]
    assert pairs(missed) == [p for p in ref if p not in top][:8]
    assert chip("x") not in words  # the dead class is no pair
    assert "Give the network's held-out confusion" not in page


def test_every_layer_with_class_means_is_held_against_its_profiles(tmp_path):
    knowledge = _knowledge()
    page = write_report(knowledge.save(tmp_path / "k.semvec.safetensors"), tmp_path / "report",
                        card_layers=0).read_text()
    for layer in ("logits", "hidden"):
        stats = knowledge.statistics(layer)
        profiles = class_profile_similarity(stats["class_means"])
        keep = ~stats["dead"] & ~profiles.diagonal().isnan()
        expected = similarity_agreement(knowledge.semantic_similarity(layer), profiles,
                                        top_k=TOP_PAIRS, keep=keep)
        slugs = re.findall(r'<section id="([^"]+)" class="layer">', page)  # the ranked order
        slug = next(s for s in slugs if s.endswith(layer))
        # The first-ranked layer's comparison is on the first screen, not again in its section.
        where = 'id="explain"' if slug == slugs[0] else f'<section id="{slug}"'
        text, attrs = _paragraph(page, "profiles", after=where)
        assert page.count(f'data-spearman="{attrs["spearman"]}"') == 1
        _expected_numbers(text, attrs, expected)
        assert f"class profiles of two of its {int(keep.sum())} alive neurons" in text
    # The hidden layer's vectors are its profiles plus noise: they explain them.
    assert verdict(expected) == "explain"
    # Without a confusion the lead says what it could add; the rule is stated at the end.
    assert "Give the network's held-out confusion" in page
    assert page.index("The vectors explain a reference when") > page.index('<section id="about">')


def test_too_few_alive_neurons_are_not_measured(tmp_path):
    means = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    knowledge = StaticKnowledge.from_vectors({"fc": means.T.contiguous()},
                                             statistics={"fc": {"class_means": means}})
    page = write_report(knowledge.save(tmp_path / "k.semvec.safetensors"), tmp_path / "r").read_text()
    assert "not measured (5 alive neurons give fewer than 15 pairs)" in page
    assert "data-spearman" not in page


@pytest.mark.parametrize(("confusion", "error", "match"), [
    ([[1, 0], [0, 1]], SemvecTypeError, r"confusion must be a \(C, C\) tensor of counts .* got list"),
    (torch.ones(8, 8, dtype=torch.bool), SemvecTypeError, r"got a torch.bool tensor"),
    (torch.ones(8, 7), SemvecValueError, r"square \(C, C\) matrix .* got shape \(8, 7\)"),
    (torch.ones(8), SemvecValueError, r"got shape \(8,\)"),
    (-torch.eye(8), SemvecValueError, r"finite counts >= 0 .* 8 negative or non-finite"),
    (torch.full((8, 8), float("nan")), SemvecValueError, r"64 negative or non-finite"),
    (torch.eye(6), SemvecValueError, r"confusion is 6 x 6, but the logits layer 'logits' has 8 classes"),
])
def test_a_bad_confusion_is_a_one_line_error_before_anything_is_written(tmp_path, confusion, error, match):
    path = _knowledge().save(tmp_path / "k.semvec.safetensors")
    with pytest.raises(error, match=match) as info:
        write_report(path, tmp_path / "report", confusion=confusion)
    assert "\n" not in str(info.value) and not (tmp_path / "report").exists()


def test_a_confusion_needs_a_layer_with_one_neuron_per_class(tmp_path):
    path = StaticKnowledge.from_vectors({"fc": torch.randn(5, 3)}, class_names=["a", "b"]).save(
        tmp_path / "k.semvec.safetensors")
    with pytest.raises(SemvecValueError, match="no learned layer .* one neuron per class"):
        write_report(path, tmp_path / "report", confusion=torch.eye(2))
    assert not (tmp_path / "report").exists()


def test_the_verdict_follows_the_numbers():
    none = torch.zeros(0, 2, dtype=torch.long)

    def result(spearman: float, shared: int, chance: float = 0.12) -> SimilarityAgreement:
        return SimilarityAgreement(spearman, shared / 15, chance / 15, 15, 1891, none, none)

    assert verdict(result(0.45, 3)) == "explain"  # P(>= 3 of 15 shared by chance) ~ 2e-4
    assert verdict(result(0.45, 1)) == "explain in part"  # one shared pair: p ~ 0.11
    assert verdict(result(0.36, 3)) == "explain in part"  # the demo's logits
    assert verdict(result(0.1, 3)) == "explain in part"
    assert verdict(result(0.25, 0)) == "explain in part"
    assert verdict(result(0.1, 1)) == "do not explain"
    # 12 of 15 among 36 pairs (chance 6.25) beats chance; 8 of 15 does not.
    small = SimilarityAgreement(0.45, 12 / 15, 15 / 36, 15, 36, none, none)
    assert verdict(small) == "explain" and verdict(small._replace(top_overlap=8 / 15)) == "explain in part"
    assert verdict(result(float("nan"), 0)) == "do not explain"
    assert verdict(None) == ""
