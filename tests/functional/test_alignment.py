import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_semvec.functional import (
    activation_similarity,
    alignment_loss,
    alignment_loss_dense,
    alignment_loss_factorized,
    gram_frobenius_sq,
    normalize_vectors,
    semantic_similarity,
    standardize_activations,
)
from lightning_semvec.functional import alignment as alignment_module


@settings(max_examples=60, deadline=None)
@given(
    samples=st.integers(2, 40),
    neurons=st.integers(2, 60),
    dim=st.integers(1, 16),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["pearson", "cosine"]),
)
def test_dense_and_factorised_agree(samples, neurons, dim, seed, kind):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(samples, neurons, generator=g, dtype=torch.float64)
    vecs = torch.randn(neurons, dim, generator=g, dtype=torch.float64)
    z, alive = standardize_activations(acts.double(), kind)
    z = z.double()
    e = torch.nn.functional.normalize(vecs, dim=1)
    dense = alignment_loss_dense(z, e, alive)
    fact = alignment_loss_factorized(z, e, alive)
    assert torch.allclose(dense.double(), fact.double(), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_dense_and_factorised_agree_in_float32_with_dead_neurons(seed):
    g = torch.Generator().manual_seed(seed)
    acts = torch.relu(torch.randn(24, 50, generator=g))
    acts[:, :5] = 0.0  # dead (never fires)
    acts[:, 5:8] = 3.0  # dead (constant)
    vecs = torch.randn(50, 8, generator=g)
    dense, alive = alignment_loss(acts, vecs, form="dense")
    fact, _ = alignment_loss(acts, vecs, form="factorized")
    assert not alive[:8].any() and alive[8:].all()
    assert torch.isfinite(dense) and torch.isfinite(fact)
    assert torch.allclose(dense, fact, rtol=1e-5)


def test_gradients_of_both_forms_agree():
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(16, 30, generator=g)
    vecs = torch.randn(30, 4, generator=g, requires_grad=True)
    grads = []
    for form in ("dense", "factorized"):
        vecs.grad = None
        alignment_loss(acts, vecs, form=form)[0].backward()
        grads.append(vecs.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_loss_matches_definition_over_alive_pairs():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(20, 6, generator=g)
    acts[:, 2] = 1.5  # dead
    vecs = torch.randn(6, 3, generator=g)
    s_act = activation_similarity(acts)
    s_sem = semantic_similarity(vecs)
    alive = [0, 1, 3, 4, 5]
    expected = torch.stack(
        [(s_sem[i, j] - s_act[i, j]) ** 2 for i in alive for j in alive if i != j]
    ).mean()
    loss, _ = alignment_loss(acts, vecs)
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_pearson_and_cosine_differ_on_non_negative_activations():
    acts = torch.tensor([[1.0, 1.0], [2.0, 0.5], [3.0, 0.0]])
    assert activation_similarity(acts, "pearson")[0, 1] < -0.99
    assert activation_similarity(acts, "cosine")[0, 1] > 0.0


def test_low_precision_input_is_computed_in_float32():
    acts = torch.randn(32, 10).to(torch.bfloat16)
    z, alive = standardize_activations(acts)
    assert z.dtype == torch.float32 and alive.all()
    assert torch.allclose(z.square().sum(0), torch.ones(10), atol=1e-5)


def test_all_dead_gives_zero_loss_not_nan():
    loss, alive = alignment_loss(torch.zeros(8, 5), torch.randn(5, 2))
    assert not alive.any() and loss.item() == 0.0


def test_sample_weights_ignore_padding_rows():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(10, 7, generator=g)
    vecs = torch.randn(7, 3, generator=g)
    padded = torch.cat([acts, torch.zeros(4, 7)])
    weights = torch.cat([torch.ones(10), torch.zeros(4)])
    plain, _ = alignment_loss(acts, vecs)
    weighted, _ = alignment_loss(padded, vecs, sample_weights=weights)
    assert torch.allclose(plain, weighted, rtol=1e-5)


def test_gram_blocks_match_one_shot(monkeypatch):
    z = torch.randn(30, 50, dtype=torch.float64)
    expected = (z.T @ z).square().sum()
    monkeypatch.setattr(alignment_module, "GRAM_BLOCK_ROWS", 7)
    assert torch.allclose(gram_frobenius_sq(z), expected)


def test_wide_layer_never_builds_n_by_n():
    neurons = 20_000  # N x N float32 would be 1.6 GB
    acts = torch.randn(32, neurons)
    vecs = torch.randn(neurons, 8, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        loss, _ = alignment_loss(acts, vecs)
        loss.backward()
    biggest = max(evt.cpu_memory_usage for evt in prof.key_averages())
    assert biggest < neurons * neurons * 4 / 100
    assert torch.isfinite(loss)


def test_bad_shapes_and_options_raise():
    with pytest.raises(ValueError, match="same number of neurons"):
        alignment_loss(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="Unknown similarity kind"):
        alignment_loss(torch.randn(4, 3), torch.randn(3, 2), kind="spearman")
    with pytest.raises(ValueError, match="Unknown alignment form"):
        alignment_loss(torch.randn(4, 3), torch.randn(3, 2), form="sparse")
    with pytest.raises(ValueError, match="neurons"):
        normalize_vectors(torch.randn(3))


def test_leaving_out_the_constant_term_keeps_the_gradient():
    g = torch.Generator().manual_seed(5)
    acts = torch.randn(16, 300, generator=g)
    grads, values = [], []
    for constant in (True, False):
        vecs = torch.randn(300, 4, generator=torch.Generator().manual_seed(9), requires_grad=True)
        loss, _ = alignment_loss(acts, vecs, form="factorized", constant_term=constant)
        loss.backward()
        grads.append(vecs.grad)
        values.append(loss.item())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    assert values[0] != values[1]


def test_standardize_never_changes_its_input():
    acts = torch.randn(12, 5)
    copy = acts.clone()
    standardize_activations(acts, "pearson")
    standardize_activations(acts, "cosine")
    standardize_activations(acts, "pearson", sample_weights=torch.ones(12))
    assert torch.equal(acts, copy)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("form", ["dense", "factorized"])
def test_non_finite_activations_give_a_nan_loss(bad, form):
    acts = torch.randn(8, 5)
    acts[3, 2] = bad
    loss, _ = alignment_loss(acts, torch.randn(5, 3), form=form)
    assert torch.isnan(loss)
