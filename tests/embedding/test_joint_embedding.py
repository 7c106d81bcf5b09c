"""embed_models: two models' neurons in one space, the matching, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import QUIET, data, mlp, permuted
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import SemvecError, StaticKnowledge, embed_models, embed_neurons
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional import match_neurons, semantic_fidelity
from lightning_semvec.functional.optimal_embedding import dense_alignment_loss
from lightning_semvec.functional.similarity import (
    activation_similarity,
    normalize_vectors,
)
from lightning_semvec.knowledge.joint_space import (
    joint_models,
    matching_key,
    stored_correlation,
)


def eigen_start(s: Tensor, dim: int) -> Tensor:
    """Unit rows of the top ``dim`` eigenvectors of ``s`` scaled by their roots (float64)."""
    values, vectors = torch.linalg.eigh(s)
    return normalize_vectors(vectors[:, -dim:] * values[-dim:].clamp_min(0).sqrt())


@pytest.mark.parametrize("exact_max_neurons", [4096, 16], ids=["exact", "sketched"])
def test_matching_recovers_a_permutation_of_the_hidden_units(exact_max_neurons):
    a = mlp(0)
    b, (perm1, perm2) = permuted(a, seed=1, noise=0.02)
    knowledge = embed_models({"a": a, "b": b}, data(), layers=["1", "3", "4"], dim=16,
                             exact_max_neurons=exact_max_neurons, trainer=QUIET)
    assert knowledge.layer_names == ["a/1", "a/3", "a/4", "b/1", "b/3", "b/4"]
    layers = joint_models(knowledge)
    assert layers == {"a": ["a/1", "a/3", "a/4"], "b": ["b/1", "b/3", "b/4"]}
    vectors_a = torch.cat([knowledge[n].vectors for n in layers["a"]])
    vectors_b = torch.cat([knowledge[n].vectors for n in layers["b"]])
    matching = match_neurons(vectors_a, vectors_b)
    # A's unit i is B's unit perm^-1(i) of the same layer; the logits keep their order.
    expected = torch.cat([perm1.argsort(), 16 + perm2.argsort(), 28 + torch.arange(4)])
    alive = torch.cat([knowledge.statistics(n)["dead"] for n in layers["a"]]).logical_not()
    assert alive.sum() >= 28  # the test means something only if most units fire
    assert torch.equal(matching.indices[alive, 0], expected[alive])
    assert matching.mutual[alive].all()
    correlation = stored_correlation(knowledge, "a", "b", matching.indices[:, 0])
    if exact_max_neurons > 32:
        assert correlation[alive].min() > 0.98  # a unit and its (2 % moved) permuted copy
    else:
        assert correlation is None  # a sketch has no exact correlations to store


def test_joint_vectors_reach_the_brute_force_optimum_of_the_joint_similarity():
    a, b = mlp(0, (10, 8)), mlp(1, (9, 8))
    loader = data(n=384)
    knowledge = embed_models({"teacher": a, "student": b}, loader,
                             layers={"teacher": "1", "student": ["3"]}, dim=4, trainer=QUIET)
    vectors = torch.cat([knowledge["teacher/1"].vectors, knowledge["student/3"].vectors])

    # The joint similarity by hand: both layers' activations on the same inputs, side by side.
    inputs = torch.cat([x for x, _ in loader])
    with torch.no_grad():
        joint = torch.cat([a[:2](inputs), b[:4](inputs)], dim=1)
    s = activation_similarity(joint).double()
    alive = s.diagonal() > 0
    assert alive.all()
    loss = dense_alignment_loss(vectors.double(), s, alive).item()
    fidelity = semantic_fidelity(s, alive, vectors)["spearman"].item()

    # Brute force: Adam on the loss of the hand-made matrix, from random starts and from the
    # eigen start; the embedding is at least as good as the best of them.
    brute, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend
    for start in [torch.randn(18, 4, generator=torch.Generator().manual_seed(i))
                  for i in range(2)] + [eigen_start(s, 4)]:
        fitted = start.double().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([fitted], lr=1e-2)
        for _ in range(1000):
            optimizer.zero_grad()
            dense_alignment_loss(normalize_vectors(fitted), s, alive).backward()
            optimizer.step()
        fitted = normalize_vectors(fitted.detach())
        brute.append((dense_alignment_loss(fitted, s, alive).item(),
                      semantic_fidelity(s, alive, fitted)["spearman"].item()))
    torch.set_num_threads(threads)
    best_loss, best_fidelity = min(brute)
    assert loss <= best_loss + 1e-6, (loss, brute)
    assert loss < dense_alignment_loss(eigen_start(s, 4), s, alive).item()
    assert fidelity >= best_fidelity - 0.005, (fidelity, brute)
    assert float(knowledge.extra["fidelity/joint"]) == pytest.approx(fidelity, abs=1e-4)


def test_knowledge_file_statistics_and_models_are_each_models_own(tmp_path):
    a, b = mlp(0), mlp(1, (8, 6))
    a.train()
    knowledge = embed_models({"a": a, "b": b}, data(), layers={"a": ["1", "4"], "b": ["3"]},
                             dim=5, num_classes=3, trainer=QUIET)
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "joint.semvec.safetensors"))
    assert loaded == knowledge
    assert json.loads(loaded.extra["joint/models"]) == ["a", "b"]
    assert matching_key("a", "b") in loaded.extra
    assert "a: torch.nn.modules.container.Sequential" in loaded.source_model
    # Each layer's statistics are those of the model alone.
    alone = embed_neurons(a, data(), ["1", "4"], dim=5, num_classes=3, trainer=QUIET)
    for layer in ("1", "4"):
        for key, value in alone.statistics(layer).items():
            assert torch.allclose(loaded.statistics(f"a/{layer}")[key], value, atol=1e-5), key
    assert loaded["b/3"].vectors.shape == (6, 5)
    assert a.training  # left in its mode


def test_models_are_left_exactly_as_they_were_also_after_an_exception():
    a, b = mlp(0), mlp(1)
    a.train()
    b[1].train(False)
    own = a[0].register_forward_hook(lambda *args: None)
    weights = [p.clone() for p in (*a.parameters(), *b.parameters())]
    modes = [m.training for m in (*a.modules(), *b.modules())]
    hooks = [dict(m._forward_hooks) for m in (*a.modules(), *b.modules())]

    def check():
        assert [m.training for m in (*a.modules(), *b.modules())] == modes
        assert [dict(m._forward_hooks) for m in (*a.modules(), *b.modules())] == hooks
        assert all(torch.equal(p, w) for p, w in zip((*a.parameters(), *b.parameters()), weights))

    embed_models({"a": a, "b": b}, data(), layers=["1", "3"], dim=3, trainer=QUIET)
    check()
    with pytest.raises(SemvecValueError, match="different numbers of rows"):
        embed_models({"a": a, "b": b}, data(), layers=["1", "3"], dim=3, trainer=QUIET,
                     input_fn=lambda batch: batch[0],
                     layer_options={"b/3": {"select_output": lambda out: out.repeat(2, 1)}})
    check()
    own.remove()


class TwoResolutions(nn.Module):
    """A conv net whose two stages have different spatial sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class SkipsALayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(6, 5), nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.used(x)


@pytest.mark.parametrize(
    ("models", "layers", "options", "error", "message"),
    [
        ([mlp(0), mlp(1)], ["1"], {}, SemvecTypeError,
         r"models must be a dict \{name: nn.Module\}"),
        ({"a": mlp(0)}, ["1"], {}, SemvecValueError, "at least two models.*use embed_neurons"),
        ({"a": mlp(0), "b/c": mlp(1)}, ["1"], {}, SemvecValueError,
         "Model name 'b/c' cannot prefix layer names.*without '/'"),
        ({"a": mlp(0), "": mlp(1)}, ["1"], {}, SemvecValueError, "Model name '' cannot prefix"),
        ({"a": mlp(0), "b": "not a model"}, ["1"], {}, SemvecTypeError,
         r"models\['b'\] must be an nn.Module, got str"),
        ({"a": mlp(0), "b": mlp(1)}, {"a": ["1"]}, {}, SemvecValueError,
         r"missing \['b'\], unknown \[\]"),
        ({"a": mlp(0), "b": mlp(1)}, {"a": ["1"], "b": ["1"], "c": ["1"]}, {}, SemvecValueError,
         r"missing \[\], unknown \['c'\]"),
        ({"a": mlp(0), "b": mlp(1)}, {"a": ["1"], "b": ["fc"]}, {}, SemvecValueError,
         "embed_models, model 'b': .*'fc'"),
        ({"a": mlp(0), "b": mlp(1)}, 3, {}, SemvecTypeError,
         "layers must be {model name: layer names or patterns}"),
        ({"a": mlp(0), "b": mlp(1)}, {"a": "1", "b": None}, {}, SemvecTypeError,
         "embed_models, model 'b': layers must be a module name"),
        ({"a": mlp(0), "b": mlp(1)}, ["1"], {"num_classes": 3, "class_names": ["x", "y"]},
         SemvecValueError, "class_names has 2 names but num_classes=3"),
        ({"a": mlp(0), "b": mlp(1)}, ["1"], {"dim": 0}, SemvecValueError, "dim"),
        ({"a": mlp(0), "b": SkipsALayer()}, {"a": ["1"], "b": ["unused"]}, {}, SemvecValueError,
         r"layers \['b/unused'\] were never called in their model's forward"),
        ({"a": TwoResolutions(), "b": TwoResolutions()}, ["conv1", "conv2"],
         {"reduction": "positions"}, SemvecValueError,
         "different numbers of rows for one batch.*reduction='mean'"),
    ],
    ids=["not-a-dict", "one-model", "slash-in-name", "empty-name", "not-a-module",
         "layers-miss-a-model", "layers-name-another-model", "unknown-layer", "layers-type",
         "layers-none-for-a-model", "class-names-vs-num-classes", "dim", "layer-never-called", "rows-differ"],
)
def test_bad_input_is_one_clear_error(models, layers, options, error, message):
    images = isinstance(next(iter(models.values()), None), TwoResolutions) if isinstance(
        models, dict) else False
    loader = DataLoader(TensorDataset(torch.randn(32, 1, 8, 8)), batch_size=16) if images \
        else data(n=64)
    with pytest.raises(error, match=message) as caught:
        embed_models(models, loader, layers, trainer=QUIET, **options)
    assert isinstance(caught.value, SemvecError)


def test_a_layer_called_twice_in_one_forward_is_refused_and_a_model_twice_is_not():
    a = mlp(0)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(6, 8), shared, nn.Linear(8, 8), shared, nn.Linear(8, 4))
    with pytest.raises(SemvecValueError, match="embed_models: layer 'b/1' ran more than once in one"):
        embed_models({"a": a, "b": twice}, data(), layers=["1"], dim=3, trainer=QUIET)
    assert not any(m._forward_hooks for m in (*a.modules(), *twice.modules()))
    # one module object in two models runs once in each model's forward: that is no second call
    knowledge = embed_models({"a": a, "b": a}, data(), layers=["1"], dim=3, trainer=QUIET)
    assert list(knowledge.layers) == ["a/1", "b/1"]
