"""Tests for the relation-based distillation baselines (KD, RKD, SP, CC, PKT).

Each loss is checked against (1) a tiny case worked out by hand (derivation in comments) and
(2) an independent float64 NumPy implementation written with explicit loops, on random data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_semvec.functional.relational_distillation import (
    KD_TEMPERATURE,
    PKT_WEIGHT,
    RKD_ANGLE_WEIGHT,
    RKD_DISTANCE_WEIGHT,
    SP_WEIGHT,
    cc_loss,
    kd_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    sp_loss,
)

SQ2 = math.sqrt(2.0)

# Three 2-D points: teacher is a right angle, student is collinear.
T3 = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
S3 = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]

FEATURE_LOSSES = [rkd_distance_loss, rkd_angle_loss, rkd_loss, sp_loss, cc_loss, pkt_loss]
ALL_LOSSES = [kd_loss, *FEATURE_LOSSES]


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


# --------------------------------------------------------------------------- NumPy references


def _np_kd(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    total = 0.0
    for row_s, row_t in zip(s, t):
        p_s = np.exp(row_s / temp) / np.exp(row_s / temp).sum()
        p_t = np.exp(row_t / temp) / np.exp(row_t / temp).sum()
        total += float((p_t * np.log(p_t / p_s)).sum())
    return total / len(s) * temp**2


def _np_rkd_distance(s: np.ndarray, t: np.ndarray) -> float:
    b = len(s)

    def dist(x: np.ndarray) -> np.ndarray:
        d = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                d[i, j] = np.linalg.norm(x[i] - x[j])
        return d / (d.sum() / (b * (b - 1)))

    ds, dt = dist(s), dist(t)
    return sum(_huber(ds[i, j] - dt[i, j]) for i in range(b) for j in range(b)) / b**2


def _np_rkd_angle(s: np.ndarray, t: np.ndarray) -> float:
    b = len(s)

    def unit(v: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(v)
        return v / n if n > 0 else np.zeros_like(v)

    total = 0.0
    for j in range(b):
        for i in range(b):
            for k in range(b):
                a_s = unit(s[i] - s[j]) @ unit(s[k] - s[j])
                a_t = unit(t[i] - t[j]) @ unit(t[k] - t[j])
                total += _huber(a_s - a_t)
    return total / b**3


def _np_sp(s: np.ndarray, t: np.ndarray) -> float:
    def gram(x: np.ndarray) -> np.ndarray:
        g = x @ x.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    b = len(s)
    return float(((gram(t) - gram(s)) ** 2).sum()) / b**2


def _np_cc(s: np.ndarray, t: np.ndarray, gamma: float, order: int) -> float:
    # Direct RBF on unit vectors, exp(-gamma ||u_i - u_j||^2) = exp(-2g) exp(2g <u_i,u_j>),
    # truncated after `order` terms of the exponential series.
    def kernel(x: np.ndarray) -> np.ndarray:
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        b = len(u)
        c = np.zeros((b, b))
        for i in range(b):
            for j in range(b):
                z = 2.0 * gamma * float(u[i] @ u[j])
                series = sum(z**p / math.factorial(p) for p in range(order + 1))
                c[i, j] = math.exp(-2.0 * gamma) * series
        return c

    b = len(s)
    return float(((kernel(t) - kernel(s)) ** 2).sum()) / b**2


def _np_pkt(s: np.ndarray, t: np.ndarray) -> float:
    def cond(x: np.ndarray) -> np.ndarray:
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        k = (u @ u.T + 1.0) / 2.0
        return k / k.sum(axis=1, keepdims=True)

    p_s, p_t = cond(s), cond(t)
    b = len(s)
    return float((p_t * np.log(p_t / p_s)).sum()) / b**2


# --------------------------------------------------------------------------- hand-computed


def test_kd_hand_case() -> None:
    # T = 4: teacher logits [4, 0] / 4 = [1, 0] -> p_t = [e, 1] / (e + 1); student uniform.
    # KL = p ln(2p) + q ln(2q) with p = e/(e+1) = 0.731059, q = 0.268941
    #    = 0.731059 * 0.379885 + 0.268941 * (-0.620115) = 0.110944; times T^2 = 16 -> 1.775105.
    p = math.e / (math.e + 1.0)
    q = 1.0 - p
    expected = 16.0 * (p * math.log(2 * p) + q * math.log(2 * q))
    got = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[4.0, 0.0]]), temperature=4.0)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(1.775105, abs=1e-5)
    # batchmean: adding an identical (zero-KL) row halves the loss.
    got2 = kd_loss(torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([[4.0, 0.0], [1.0, 2.0]]))
    assert got2.item() == pytest.approx(expected / 2, abs=1e-5)
    assert KD_TEMPERATURE == 4.0


def test_rkd_distance_hand_case() -> None:
    # Teacher distances d01 = 1, d02 = 1, d12 = sqrt2; off-diagonal mean (2 + sqrt2) / 3.
    #   normalised: 3 / (2 + sqrt2) = 0.878680 (twice), 3 sqrt2 / (2 + sqrt2) = 1.242641.
    # Student distances d01 = 1, d02 = 2, d12 = 1; mean 4/3 -> 0.75, 1.5, 0.75.
    # Differences (all < 1, so Huber = x^2 / 2): 0.128680, -0.621320, 0.492641.
    # Each pair appears twice in the 3x3 matrix, diagonal differences are 0; mean over 9.
    t_n = [3 / (2 + SQ2), 3 / (2 + SQ2), 3 * SQ2 / (2 + SQ2)]  # d01, d02, d12
    s_n = [0.75, 1.5, 0.75]
    expected = 2 * sum(_huber(a - b) for a, b in zip(s_n, t_n)) / 9
    assert expected == pytest.approx(0.071700, abs=1e-5)
    got = rkd_distance_loss(torch.tensor(S3), torch.tensor(T3))
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_rkd_angle_hand_case() -> None:
    # Cosines at each anchor for the pair of *other* points (i != k, both != anchor):
    #   teacher: anchor 0: 0;  anchor 1: <(-1,0), (-1,1)/sqrt2> = 1/sqrt2;  anchor 2: 1/sqrt2.
    #   student (collinear): anchor 0: +1; anchor 1: -1; anchor 2: +1.
    # Entries i == k (both != anchor) are 1 for both; entries with i or k == anchor are 0.
    # Differences: 1, -1 - 1/sqrt2, 1 - 1/sqrt2 (each twice: (i, k) and (k, i)).
    # Huber: 0.5, 0.5 + 1/sqrt2, 0.5 (1 - 1/sqrt2)^2 = 0.75 - 1/sqrt2; sum = 1.75, twice = 3.5.
    # Mean over 27 entries: 3.5 / 27 = 0.129630.
    expected = 3.5 / 27
    got = rkd_angle_loss(torch.tensor(S3), torch.tensor(T3))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    combined = rkd_loss(torch.tensor(S3), torch.tensor(T3))
    expected_d = rkd_distance_loss(torch.tensor(S3), torch.tensor(T3)).item()
    assert combined.item() == pytest.approx(
        RKD_DISTANCE_WEIGHT * expected_d + RKD_ANGLE_WEIGHT * expected, rel=1e-5
    )
    only_angle = rkd_loss(torch.tensor(S3), torch.tensor(T3), distance_weight=0.0, angle_weight=2.0)
    assert only_angle.item() == pytest.approx(2 * expected, rel=1e-5)


def test_sp_hand_case() -> None:
    # Teacher Q = I: G_T = I (rows already unit). Student rows equal [1, 0]: Q Q^T = all ones,
    # rows normalised -> all 1/sqrt2. ||G_T - G_S||^2 = 2 (1 - 1/sqrt2)^2 + 2 (1/2) = 4 - 2 sqrt2.
    # Divided by b^2 = 4: 1 - 1/sqrt2 = 0.292893.
    got = sp_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.eye(2))
    assert got.item() == pytest.approx(1 - 1 / SQ2, abs=1e-6)
    assert SP_WEIGHT == 3000.0


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        # Student rows identical: cos = 1 everywhere. Teacher I: cos = 1 on the diagonal, 0 off.
        # C = e^{-2g} sum_{p<=P} (2g cos)^p / p!, g = 0.4 -> off-diagonal difference is
        # e^{-0.8} * (0.8 + 0.8^2/2) = 1.12 e^{-0.8} for P = 2 and 0.8 e^{-0.8} for P = 1;
        # two off-diagonal entries over b^2 = 4 -> (diff)^2 / 2.
        (2, (1.12 * math.exp(-0.8)) ** 2 / 2),
        (1, (0.8 * math.exp(-0.8)) ** 2 / 2),
    ],
)
def test_cc_hand_case(order: int, expected: float) -> None:
    got = cc_loss(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.eye(2), gamma=0.4, order=order)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_pkt_hand_case() -> None:
    # Teacher I: cos off-diagonal 0 -> kernel 1/2; rows [1, 1/2] / 1.5 = [2/3, 1/3].
    # Student [1,0], [1,1]: cos = 1/sqrt2 -> kernel k = (1 + 1/sqrt2) / 2 = 0.853553;
    # rows [1, k] / (1 + k) = [0.539500, 0.460500] (same for both rows by symmetry).
    # Row KL = 2/3 ln((2/3) / 0.5395) + 1/3 ln((1/3) / 0.4605) = 0.033370; two rows, / b^2 = 4.
    k = (1 + 1 / SQ2) / 2
    ps = [1 / (1 + k), k / (1 + k)]
    row_kl = 2 / 3 * math.log((2 / 3) / ps[0]) + 1 / 3 * math.log((1 / 3) / ps[1])
    expected = 2 * row_kl / 4
    assert expected == pytest.approx(0.016685, abs=1e-5)
    got = pkt_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.eye(2))
    assert got.item() == pytest.approx(expected, abs=1e-5)
    assert PKT_WEIGHT == 30000.0


# --------------------------------------------------------------------------- NumPy, random data


def test_against_numpy_references() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 3, 2))  # flattened to (5, 6)
    t = rng.normal(size=(5, 4))  # a different width is fine
    s_flat = s.reshape(5, -1)
    st, tt = torch.tensor(s), torch.tensor(t)
    assert rkd_distance_loss(st, tt).item() == pytest.approx(_np_rkd_distance(s_flat, t), abs=1e-5)
    assert rkd_angle_loss(st, tt).item() == pytest.approx(_np_rkd_angle(s_flat, t), abs=1e-5)
    assert sp_loss(st, tt).item() == pytest.approx(_np_sp(s_flat, t), abs=1e-6)
    for order in (1, 2, 3):
        got = cc_loss(st, tt, gamma=0.7, order=order).item()
        assert got == pytest.approx(_np_cc(s_flat, t, 0.7, order), abs=1e-6)
    assert pkt_loss(st, tt).item() == pytest.approx(_np_pkt(s_flat, t), abs=1e-5)
    logits_s, logits_t = rng.normal(size=(4, 7)) * 3, rng.normal(size=(4, 7)) * 3
    got_kd = kd_loss(torch.tensor(logits_s), torch.tensor(logits_t), temperature=2.5).item()
    assert got_kd == pytest.approx(_np_kd(logits_s, logits_t, 2.5), rel=1e-5)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_identical_teacher_and_student_give_zero(loss) -> None:
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_rkd_is_scale_and_shift_free() -> None:
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    assert rkd_loss(3.0 * x + 1.5, x).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_gradient_flows_to_student_only(loss) -> None:
    g = torch.Generator().manual_seed(3)
    student = torch.randn(5, 4, generator=g, requires_grad=True)
    teacher = torch.randn(5, 4, generator=g, requires_grad=True)
    out = loss(student, teacher)
    assert out.dtype == torch.float32 and out.ndim == 0
    out.backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", FEATURE_LOSSES, ids=lambda f: f.__name__)
def test_duplicate_student_samples_keep_gradients_finite(loss) -> None:
    student = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss(student, teacher).backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_bfloat16_inputs_compute_in_float32(loss) -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    y = torch.randn(4, 6, generator=torch.Generator().manual_seed(5))
    got = loss(x.bfloat16(), y.bfloat16())
    ref = loss(x.bfloat16().float(), y.bfloat16().float())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_mismatched_batch_raises(loss) -> None:
    with pytest.raises(ValueError, match="same batch size"):
        loss(torch.randn(4, 3), torch.randn(5, 3))


@pytest.mark.parametrize("loss", FEATURE_LOSSES, ids=lambda f: f.__name__)
def test_batch_of_one_raises(loss) -> None:
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(torch.randn(1, 3), torch.randn(1, 3))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda f: f.__name__)
def test_wrong_ndim_raises(loss) -> None:
    with pytest.raises(ValueError, match="dimensions|batch, classes"):
        loss(torch.randn(4), torch.randn(4))


def test_kd_specific_errors() -> None:
    with pytest.raises(ValueError, match="batch, classes"):
        kd_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="same number of classes"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=0.0)


def test_cc_and_pkt_parameter_errors() -> None:
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="order"):
        cc_loss(x, x, order=0)
    with pytest.raises(ValueError, match="order"):
        cc_loss(x, x, order=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        cc_loss(x, x, gamma=0.0)
    with pytest.raises(ValueError, match="eps"):
        pkt_loss(x, x, eps=-1.0)
