"""linear_cka and the unbiased HSIC against NumPy closed forms, CKA's invariances, clear errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional import (
    cka_from_hsic,
    linear_cka,
    pairwise_unbiased_hsic,
    unbiased_hsic,
)


def related_pair(samples=40, n1=6, n2=9, seed=0):
    """Two layers that share a 3-d latent, plus noise: a CKA well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(samples, 3, generator=g)
    x = latent @ torch.randn(3, n1, generator=g) + 0.5 * torch.randn(samples, n1, generator=g) + 2.0
    y = torch.tanh(latent @ torch.randn(3, n2, generator=g)) + 0.3 * torch.randn(samples, n2, generator=g)
    return x, y


def numpy_biased_cka(x, y):
    """tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with H = I - 11^T / n, in float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    kx, ly = x @ x.T, y @ y.T
    return np.trace(kx @ h @ ly @ h) / np.sqrt(np.trace(kx @ h @ kx @ h) * np.trace(ly @ h @ ly @ h))


def numpy_hsic1(kx, ly):
    """HSIC_1 of Song et al. (2012), eq. (5), from the formula."""
    kx, ly = np.array(kx, dtype=np.float64), np.array(ly, dtype=np.float64)
    n = len(kx)
    np.fill_diagonal(kx, 0.0)
    np.fill_diagonal(ly, 0.0)
    one = np.ones(n)
    return (np.trace(kx @ ly) + (one @ kx @ one) * (one @ ly @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kx @ ly @ one)) / (n * (n - 3))


def numpy_hsic_u_statistic(kx, ly):
    """The U-statistic that HSIC_1 equals: the mean over distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq (no formula shared with the code)."""
    n = len(kx)
    total = sum(kx[i, j] * ly[i, j] + kx[i, j] * ly[q, r] - 2 * kx[i, j] * ly[i, q]
                for i, j, q, r in itertools.permutations(range(n), 4))
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def numpy_unbiased_cka(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    kx, ly = x @ x.T, y @ y.T
    return numpy_hsic1(kx, ly) / np.sqrt(numpy_hsic1(kx, kx) * numpy_hsic1(ly, ly))


# --- against NumPy ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(40, 6, 9), (7, 20, 30)], ids=["feature-form", "gram-form"])
def test_biased_cka_equals_the_numpy_gram_form(shape):
    x, y = related_pair(*shape)
    got = linear_cka(x, y)
    assert got.dtype == torch.float64 and got.shape == ()
    expected = numpy_biased_cka(x.numpy(), y.numpy())
    assert 0.05 < expected < 0.99  # a value that tells forms apart
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_unbiased_hsic_equals_the_numpy_formula_and_the_u_statistic():
    x, y = related_pair(samples=7, seed=1)
    kx, ly = x.double() @ x.double().T, y.double() @ y.double().T
    expected = numpy_hsic1(kx.numpy(), ly.numpy())
    assert unbiased_hsic(kx, ly).item() == pytest.approx(expected, abs=1e-6)
    assert unbiased_hsic(kx, ly).item() == pytest.approx(numpy_hsic_u_statistic(kx.numpy(), ly.numpy()), abs=1e-6)
    assert unbiased_hsic(kx.float(), ly.float()).dtype == torch.float64


def test_unbiased_cka_and_pairwise_hsic_equal_numpy():
    x, y = related_pair(samples=30, seed=2)
    z = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    expected = numpy_unbiased_cka(x.numpy(), y.numpy())
    assert linear_cka(x, y, unbiased=True).item() == pytest.approx(expected, abs=1e-6)
    layers = [x, y, z]
    hsic = pairwise_unbiased_hsic(layers)
    grams = [t.double().numpy() @ t.double().numpy().T for t in layers]
    reference = np.array([[numpy_hsic1(a, b) for b in grams] for a in grams])
    np.testing.assert_allclose(hsic.numpy(), reference, atol=1e-6 * np.abs(reference).max(), rtol=0)
    assert torch.equal(hsic, hsic.T)


def test_the_unbiased_hsic_of_a_linear_kernel_ignores_a_shift_of_the_features():
    x, y = related_pair(samples=12, seed=4)
    shifted = x + torch.arange(6.0) * 10
    assert unbiased_hsic(shifted @ shifted.T, y @ y.T).item() == pytest.approx(
        unbiased_hsic(x @ x.T, y @ y.T).item(), rel=1e-6)


# --- CKA's properties, both estimators ---------------------------------------------------


@pytest.mark.parametrize("unbiased", [False, True])
def test_identical_inputs_give_one_and_the_value_is_symmetric(unbiased):
    x, y = related_pair(seed=5)
    assert linear_cka(x, x, unbiased=unbiased).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y, unbiased=unbiased).item() == pytest.approx(
        linear_cka(y, x, unbiased=unbiased).item(), abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_invariant_to_rotation_and_isotropic_scaling_but_not_to_any_linear_map(unbiased):
    x, y = (t.double() for t in related_pair(seed=6))
    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    base = linear_cka(x, y, unbiased=unbiased).item()
    assert linear_cka(x @ q, y, unbiased=unbiased).item() == pytest.approx(base, abs=1e-9)
    assert linear_cka(x * 7.5, y * 0.01, unbiased=unbiased).item() == pytest.approx(base, abs=1e-9)
    stretch = torch.diag(torch.tensor([10.0, 1.0, 0.1, 1.0, 3.0, 0.5], dtype=torch.float64)) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    assert torch.linalg.matrix_rank(stretch) == 6  # invertible, not orthogonal
    assert abs(linear_cka(x @ stretch, y, unbiased=unbiased).item() - base) > 1e-2


@pytest.mark.parametrize("unbiased", [False, True])
def test_a_constant_layer_has_a_nan_cka(unbiased):
    x, _ = related_pair(samples=41, seed=8)
    constant = torch.full((41, 3), 0.1, dtype=torch.float64)
    assert (constant - constant.mean(dim=0)).abs().max() > 0  # round-off that must not count as signal
    assert math.isnan(linear_cka(x, constant, unbiased=unbiased).item())
    assert math.isnan(linear_cka(constant, constant, unbiased=unbiased).item())


def test_cka_from_hsic_is_scale_free_and_nan_for_a_non_positive_self_hsic():
    hsic = pairwise_unbiased_hsic(list(related_pair(seed=9)))
    cka = cka_from_hsic(hsic, hsic.diagonal(), hsic.diagonal())
    torch.testing.assert_close(cka, cka_from_hsic(5 * hsic, 5 * hsic.diagonal(), 5 * hsic.diagonal()))
    assert cka[0, 1].item() == pytest.approx(hsic[0, 1].item() / math.sqrt(hsic[0, 0] * hsic[1, 1]))
    out = cka_from_hsic(torch.ones(2, 3), torch.tensor([1.0, 0.0]), torch.tensor([4.0, -1.0, 1.0]))
    assert out.dtype == torch.float32
    assert out[0, 0].item() == 0.5 and out[0, 2].item() == 1.0
    assert out[1].isnan().all() and out[:, 1].isnan().all()


def test_gradients_flow_and_stay_finite():
    x, y = related_pair(seed=10)
    x.requires_grad_(True)
    linear_cka(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_cka(torch.zeros(5, 2, 2), torch.zeros(5, 2)), r"2-D \(samples, features\).*flatten"),
        (lambda: linear_cka(torch.zeros(5, 2), torch.zeros(6, 2)), "y has 6 samples but x has 5"),
        (lambda: linear_cka(torch.zeros(3, 2), torch.zeros(3, 2), unbiased=True), "at least 4"),
        (lambda: linear_cka(torch.zeros(1, 2), torch.zeros(1, 2)), "at least 2"),
        (lambda: linear_cka(torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 2)), r"floating-point.*\.float\(\)"),
        (lambda: linear_cka([[1.0]], torch.zeros(5, 2)), "got list"),
        (lambda: unbiased_hsic(torch.zeros(5, 4), torch.zeros(5, 5)), r"k must be a square \(n, n\)"),
        (lambda: unbiased_hsic(torch.zeros(5, 5), torch.zeros(6, 6)), "same samples"),
        (lambda: unbiased_hsic(torch.zeros(3, 3), torch.zeros(3, 3)), "at least 4"),
        (lambda: pairwise_unbiased_hsic(torch.zeros(5, 2)), "list of"),
        (lambda: pairwise_unbiased_hsic([]), "non-empty"),
        (lambda: pairwise_unbiased_hsic([torch.zeros(5, 2), torch.zeros(4, 2)]), r"activations\[1\] has 4"),
        (lambda: cka_from_hsic(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2)), r"\(A, B\) = \(2, 2\)"),
        (lambda: cka_from_hsic(torch.zeros(2, 2), torch.zeros(2, 1), torch.zeros(2)), "hsic_aa must be a 1-D"),
    ],
)
def test_bad_input_raises_a_one_line_error(call, message):
    with pytest.raises(SemvecValueError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)
