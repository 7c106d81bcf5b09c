"""SemanticVectors on its own: creation, the step, bad layers, its state, its optimizer."""

from __future__ import annotations

import functools

import pytest
import torch

from lightning_semvec import SemanticVectors
from lightning_semvec.functional import alignment_loss


def batch(seed: int = 0, rows: int = 32, **widths: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(rows, n, generator=g) for name, n in widths.items()}


def test_a_step_equals_the_autograd_step_of_each_layer() -> None:
    vectors = SemanticVectors(dim=3, optimizer="sgd", lr=0.5)
    acts = batch(fc=7, conv=5)
    vectors.materialize({"fc": 7, "conv": 5}, torch.device("cpu"))
    start = {n: vectors[n].detach().clone() for n in acts}
    result = vectors.step(acts, with_losses=True)
    assert result.names == ["fc", "conv"] and result.ok.all()
    for i, (name, a) in enumerate(acts.items()):
        e = start[name].clone().requires_grad_()
        loss, _ = alignment_loss(a, e)
        loss.backward()
        torch.testing.assert_close(vectors[name].detach(), start[name] - 0.5 * e.grad)
        torch.testing.assert_close(result.losses[i], loss.detach())


def test_initialisation_is_seeded_by_name_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = SemanticVectors(dim=4, seed=3), SemanticVectors(dim=4, seed=3)
    a.materialize({"x": 5, "y": 6}, torch.device("cpu"))
    b.materialize({"y": 6}, torch.device("cpu"))
    assert torch.equal(a["y"], b["y"]) and not torch.equal(a["x"][:5, :], a["y"][:5, :])
    assert torch.equal(before, torch.random.get_rng_state())


def test_state_dict_round_trip_continues_like_the_original() -> None:
    original = SemanticVectors(dim=3)
    for seed in range(3):
        original.step(batch(seed, fc=6, wide=9))
    state = original.state_dict()
    copy = SemanticVectors(dim=3)
    copy.load_state_dict(state)
    assert copy.layer_names == ["fc", "wide"]
    for seed in (7, 8):
        original.step(batch(seed, fc=6, wide=9))
        copy.step(batch(seed, fc=6, wide=9))
    for name in original.layer_names:
        assert torch.equal(original[name], copy[name])  # Adam's moments came back too


def test_a_bad_layer_keeps_its_vectors_and_counts_the_skip() -> None:
    vectors = SemanticVectors(dim=2)
    vectors.step(batch(0, fc=4, conv=3))
    before = vectors.vectors()
    acts = batch(1, fc=4, conv=3)
    acts["fc"][0, 0] = float("inf")
    result = vectors.step(acts)
    assert result.ok.tolist() == [False, True]
    assert torch.equal(vectors["fc"].detach(), before["fc"])
    assert not torch.equal(vectors["conv"].detach(), before["conv"])
    assert vectors.skipped_steps() == {"fc": 1, "conv": 0}


def test_subsets_touch_only_their_neurons() -> None:
    vectors = SemanticVectors(dim=2, max_neurons_per_step=4, optimizer="sgd")
    subset = vectors.neuron_subset(10, step=5, device=torch.device("cpu"))
    assert subset is not None and subset.shape == (4,)
    assert torch.equal(subset, vectors.neuron_subset(10, step=5, device=torch.device("cpu")))
    vectors.materialize({"wide": 10}, torch.device("cpu"))
    before = vectors["wide"].detach().clone()
    vectors.step({"wide": torch.randn(16, 4)}, subsets={"wide": subset}, num_neurons={"wide": 10})
    changed = (vectors["wide"].detach() != before).any(dim=1)
    assert torch.equal(changed.nonzero().flatten().sort().values, subset.sort().values)


def test_an_optimizer_callable_is_used() -> None:
    vectors = SemanticVectors(dim=2, optimizer=functools.partial(torch.optim.SGD, lr=0.0))
    vectors.materialize({"fc": 4}, torch.device("cpu"))
    before = vectors["fc"].detach().clone()
    vectors.step(batch(fc=4))
    assert isinstance(vectors.optimizer, torch.optim.SGD)
    assert torch.equal(vectors["fc"].detach(), before)  # lr 0: the callable's settings hold


def test_a_layer_seen_late_joins_and_the_others_keep_their_moments() -> None:
    vectors = SemanticVectors(dim=2)
    vectors.step(batch(0, fc=4))
    state = vectors.optimizer.state[vectors["fc"]]["exp_avg"].clone()
    vectors.step(batch(1, conv=3))  # fc not called in this step
    assert torch.equal(vectors.optimizer.state[vectors["fc"]]["exp_avg"], state)
    assert vectors.layer_names == ["fc", "conv"]


def test_another_optimizer_on_resume_warns_and_starts_fresh() -> None:
    adam = SemanticVectors(dim=2)
    adam.step(batch(fc=4))
    sgd = SemanticVectors(dim=2, optimizer="sgd")
    sgd.load_state_dict(adam.state_dict())
    with pytest.warns(UserWarning, match="optimizer state is of Adam.*SGD.*starts fresh"):
        sgd.step(batch(1, fc=4))
    assert torch.isfinite(sgd["fc"]).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dim": 0}, ValueError, "dim must be an integer >= 2"),
        # 1-d unit vectors are +-1: their cosine is always +-1, its gradient zero; never learns.
        ({"dim": 1}, ValueError, r"dim must be an integer >= 2, got 1. \(a 1-d unit vector is \+1 or -1"),
        ({"similarity": "dot"}, ValueError, "Unknown similarity 'dot'"),
        ({"form": "sparse"}, ValueError, "Unknown form"),
        ({"optimizer": "lbfgs"}, ValueError, "Unknown optimizer 'lbfgs'"),
        ({"optimizer": 3}, ValueError, "or a callable"),
        ({"lr": -1.0}, ValueError, "lr must be a number > 0"),
        ({"max_neurons_per_step": 1}, ValueError, "max_neurons_per_step"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SemanticVectors(**kwargs)


def test_loading_another_dim_or_width_is_a_clear_error_and_changes_nothing() -> None:
    source = SemanticVectors(dim=3)
    source.step(batch(fc=4))
    with pytest.raises(ValueError, match="dim=3, these have dim=5"):
        SemanticVectors(dim=5).load_state_dict(source.state_dict())
    narrower = SemanticVectors(dim=3)
    narrower.materialize({"fc": 6}, torch.device("cpu"))
    before = narrower["fc"].detach().clone()
    with pytest.raises(ValueError, match="6 neurons but the saved vectors have 4"):
        narrower.load_state_dict(source.state_dict())
    assert torch.equal(narrower["fc"].detach(), before)
