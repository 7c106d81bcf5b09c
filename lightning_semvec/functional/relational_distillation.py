"""Relation-based distillation baselines: losses that need the teacher run on every batch.

Pure tensor functions (no Lightning, no state). They are the baselines that static
distillation is compared with (``docs/method.md#baselines-that-need-the-teacher-on-every-batch``):

- :func:`kd_loss`: Hinton et al. 2015, KL between temperature-softened logits.
- :func:`rkd_loss` (:func:`rkd_distance_loss`, :func:`rkd_angle_loss`): Park et al. 2019,
  relational KD on pairwise distances and triplet angles.
- :func:`sp_loss`: Tung & Mori 2019, similarity-preserving KD.
- :func:`cc_loss`: Peng et al. 2019, correlation congruence with a Taylor-expanded RBF kernel.
- :func:`pkt_loss`: Passalis & Tefas 2018, probabilistic knowledge transfer.

Conventions shared by every function:

- The first argument is the student's tensor, the second the teacher's; both have the batch
  on their first axis, and the batch sizes must match. Feature tensors ``(B, ...)`` are
  flattened to ``(B, D)``; the student and teacher widths may differ except for
  :func:`kd_loss`, whose logits must have the same shape.
- All math is done in float32 whatever the input dtype (bfloat16/float16 under mixed
  precision, and float64 too).
- The teacher side is detached: gradients flow to the student only.
- The returned loss is *unweighted*; the weights of the usual CIFAR-100 setting are the
  module constants (:data:`RKD_DISTANCE_WEIGHT`, :data:`RKD_ANGLE_WEIGHT`,
  :data:`SP_WEIGHT`, :data:`PKT_WEIGHT`), except :func:`rkd_loss`, which combines its two
  terms with weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

#: Softening temperature of Hinton KD in the usual CIFAR-100 setting.
KD_TEMPERATURE = 4.0
#: Weight of the RKD distance term (Park et al. 2019).
RKD_DISTANCE_WEIGHT = 25.0
#: Weight of the RKD angle term (Park et al. 2019).
RKD_ANGLE_WEIGHT = 50.0
#: Weight of the similarity-preserving loss in the usual CIFAR-100 setting.
SP_WEIGHT = 3000.0
#: Width parameter of the RBF kernel of correlation congruence (Peng et al. 2019).
CC_GAMMA = 0.4
#: Order of the Taylor series approximating the RBF kernel of correlation congruence.
CC_ORDER = 2
#: Weight of the PKT loss in the usual CIFAR-100 setting.
PKT_WEIGHT = 30000.0

#: Smallest squared distance / norm used before a square root or division.
_EPS = 1e-12


# --------------------------------------------------------------------------- validation


def _check_batch(student: Tensor, teacher: Tensor, what: str, min_batch: int) -> None:
    if not isinstance(student, Tensor) or not isinstance(teacher, Tensor):
        raise SemvecTypeError(
            f"{what}: student and teacher must be torch tensors, got "
            f"{type(student).__name__} and {type(teacher).__name__}."
        )
    if student.ndim < 1 or teacher.ndim < 1 or student.shape[0] != teacher.shape[0]:
        raise SemvecValueError(
            f"{what}: student and teacher must have the same batch size on their first axis; "
            f"got shapes {tuple(student.shape)} and {tuple(teacher.shape)}. Run the teacher on "
            "the same batch as the student."
        )
    if student.shape[0] < min_batch:
        raise SemvecValueError(
            f"{what}: needs a batch of at least {min_batch} samples (it compares samples with "
            f"each other), got {student.shape[0]}. Use a larger batch or drop_last=True in "
            "the DataLoader."
        )


def _flat_features(
    student: Tensor, teacher: Tensor, what: str, min_batch: int
) -> tuple[Tensor, Tensor]:
    """Validate and flatten ``(B, ...)`` features to float32 ``(B, D)``; teacher detached."""
    for name, t in (("student", student), ("teacher", teacher)):
        if isinstance(t, Tensor) and t.ndim < 2:
            raise SemvecValueError(
                f"{what}: {name} features must be (batch, features...) with at least 2 "
                f"dimensions, got shape {tuple(t.shape)}. Add a feature axis, e.g. x.unsqueeze(1)."
            )
    _check_batch(student, teacher, what, min_batch)
    s = student.float().flatten(1)
    t = teacher.detach().float().flatten(1)
    if s.shape[1] == 0 or t.shape[1] == 0:
        raise SemvecValueError(
            f"{what}: features must not be empty, got shapes {tuple(student.shape)} and "
            f"{tuple(teacher.shape)}."
        )
    return s, t


# --------------------------------------------------------------------------- KD


def kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = KD_TEMPERATURE
) -> Tensor:
    """Hinton knowledge distillation: ``T**2 * KL(softmax(t / T) || softmax(s / T))``.

    The KL divergence is summed over classes and averaged over the batch ("batchmean"); the
    ``T**2`` factor keeps the gradient's scale independent of the temperature.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (detached).
        temperature: softening temperature ``T > 0`` (4 in the usual CIFAR-100 setting).

    Returns:
        A scalar float32 tensor, differentiable in ``student_logits`` only.

    Example:
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> t = torch.tensor([[4.0, 0.0]])
        >>> round(kd_loss(s, t, temperature=4.0).item(), 4)  # 16 * KL([e, 1] / (e + 1) || [.5, .5])
        1.7751
        >>> kd_loss(t, t).item()
        0.0
    """
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if isinstance(x, Tensor) and x.ndim != 2:
            raise SemvecValueError(
                f"kd_loss: {name} must be (batch, classes), got shape {tuple(x.shape)}. "
                "Flatten extra axes (e.g. tokens) into the batch first."
            )
    _check_batch(student_logits, teacher_logits, "kd_loss", min_batch=1)
    if student_logits.shape != teacher_logits.shape:
        raise SemvecValueError(
            "kd_loss: student and teacher logits must have the same number of classes, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    if not temperature > 0:
        raise SemvecValueError(f"kd_loss: temperature must be > 0, got {temperature}.")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (temperature * temperature)


# --------------------------------------------------------------------------- RKD


def _pairwise_distances(x: Tensor) -> Tensor:
    """``(B, B)`` Euclidean distances with a zero diagonal, divided by their off-diagonal mean.

    Squared distances come from the Gram matrix of the batch-centred features (centring
    leaves distances unchanged and reduces float32 cancellation); they are clamped at
    ``1e-12`` before the square root, so the gradient stays finite for duplicate samples.
    An all-identical batch has mean distance ~0; the mean is clamped at ``1e-12``.
    """
    b = x.shape[0]
    xc = x - x.mean(dim=0, keepdim=True)
    sq_norm = xc.square().sum(dim=1)
    sq = sq_norm.unsqueeze(0) + sq_norm.unsqueeze(1) - 2.0 * (xc @ xc.T)
    off_diag = ~torch.eye(b, dtype=torch.bool, device=x.device)
    d = torch.where(off_diag, sq.clamp_min(_EPS).sqrt(), torch.zeros_like(sq))
    mean = d.sum() / (b * (b - 1))
    return d / mean.clamp_min(_EPS)


def _triplet_angles(x: Tensor) -> Tensor:
    """``(B, B, B)`` cosines: ``[j, i, k] = <unit(x_i - x_j), unit(x_k - x_j)>`` (anchor ``j``).

    A zero difference (``i == j``, ``k == j`` or duplicate samples) has unit vector 0, so its
    cosines are 0. Builds the ``(B, B, D)`` difference tensor, as the reference does.
    """
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # diff[j, i] = x_i - x_j
    unit = F.normalize(diff, p=2, dim=2, eps=_EPS)
    return torch.bmm(unit, unit.transpose(1, 2))


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """RKD distance term (Park et al. 2019), unweighted.

    ``psi_D(i, j) = ||f_i - f_j|| / mu`` where ``mu`` is the mean over the ``B (B - 1)``
    off-diagonal distances of the batch, computed for teacher and student separately (the
    student's ``mu`` is differentiated through). The loss is the Huber (``smooth_l1``,
    ``beta=1``) loss between the two ``(B, B)`` matrices, averaged over all ``B**2`` entries
    including the (zero) diagonal, as in the authors' code.

    Args:
        student_features: ``(B, ...)`` student features, flattened to ``(B, D_s)``.
        teacher_features: ``(B, ...)`` teacher features, flattened to ``(B, D_t)``; detached.

    Returns:
        A scalar float32 tensor, differentiable in ``student_features`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, or a tensor has fewer than 2 dimensions.

    Example:
        >>> t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(rkd_distance_loss(3.0 * t, t).item(), 4)  # distances are scale-free
        0.0
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        >>> round(rkd_distance_loss(s, t).item(), 4)
        0.0717
    """
    s, t = _flat_features(student_features, teacher_features, "rkd_distance_loss", min_batch=2)
    with torch.no_grad():
        d_t = _pairwise_distances(t)
    d_s = _pairwise_distances(s)
    return F.smooth_l1_loss(d_s, d_t, reduction="mean", beta=1.0)


def rkd_angle_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """RKD angle term (Park et al. 2019), unweighted.

    ``psi_A(i, j, k) = cos(angle at x_j between x_i and x_k) = <e_ji, e_jk>`` with
    ``e_ji = (x_i - x_j) / ||x_i - x_j||`` (0 when ``x_i == x_j``). The loss is the Huber
    (``smooth_l1``, ``beta=1``) loss between the teacher's and student's ``(B, B, B)``
    angle tensors, averaged over all ``B**3`` entries, as in the authors' code. Memory is
    ``O(B**2 D + B**3)``. With ``B == 2`` every angle is degenerate and the loss is 0.

    Args:
        student_features: ``(B, ...)`` student features, flattened to ``(B, D_s)``.
        teacher_features: ``(B, ...)`` teacher features, flattened to ``(B, D_t)``; detached.

    Returns:
        A scalar float32 tensor, differentiable in ``student_features`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, or a tensor has fewer than 2 dimensions.

    Example:
        >>> t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(rkd_angle_loss(2.0 * t + 1.0, t).item(), 4)  # scale and shift free
        0.0
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        >>> round(rkd_angle_loss(s, t).item(), 4)
        0.1296
    """
    s, t = _flat_features(student_features, teacher_features, "rkd_angle_loss", min_batch=2)
    with torch.no_grad():
        a_t = _triplet_angles(t)
    a_s = _triplet_angles(s)
    return F.smooth_l1_loss(a_s, a_t, reduction="mean", beta=1.0)


def rkd_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    distance_weight: float = RKD_DISTANCE_WEIGHT,
    angle_weight: float = RKD_ANGLE_WEIGHT,
) -> Tensor:
    """Relational KD (Park et al. 2019): weighted sum of the distance and angle terms.

    ``distance_weight * rkd_distance_loss + angle_weight * rkd_angle_loss``; a term whose
    weight is 0 is not computed.

    Args:
        student_features: ``(B, ...)`` student (penultimate) features.
        teacher_features: ``(B, ...)`` teacher features; detached.
        distance_weight: weight of :func:`rkd_distance_loss` (25 in the paper).
        angle_weight: weight of :func:`rkd_angle_loss` (50 in the paper).

    Returns:
        A scalar float32 tensor, differentiable in ``student_features`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, or a tensor has fewer than 2 dimensions.

    Example:
        >>> t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
        >>> round(rkd_loss(s, t).item(), 3)  # 25 * 0.0717 + 50 * 0.1296
        8.274
    """
    s, t = _flat_features(student_features, teacher_features, "rkd_loss", min_batch=2)
    loss = s.new_zeros(())
    if distance_weight != 0:
        loss = loss + distance_weight * rkd_distance_loss(s, t)
    if angle_weight != 0:
        loss = loss + angle_weight * rkd_angle_loss(s, t)
    return loss


# --------------------------------------------------------------------------- SP


def _sp_gram(x: Tensor) -> Tensor:
    return F.normalize(x @ x.T, p=2, dim=1, eps=_EPS)


def sp_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019), unweighted.

    ``G = Q Q.T`` for the flattened features ``Q`` (``B x D``), each row of ``G`` divided by
    its L2 norm; loss ``||G_T - G_S||_F**2 / B**2``. Multiply by :data:`SP_WEIGHT` (3000)
    for the usual CIFAR-100 setting.

    Args:
        student_features: ``(B, ...)`` student features, flattened to ``(B, D_s)``.
        teacher_features: ``(B, ...)`` teacher features, flattened to ``(B, D_t)``; detached.

    Returns:
        A scalar float32 tensor, differentiable in ``student_features`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, or a tensor has fewer than 2 dimensions.

    Example:
        >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> round(sp_loss(s, t).item(), 4)  # 4 * (1 - 1/sqrt(2)) / 4
        0.2929
        >>> sp_loss(5.0 * t, t).item()  # invariant to the features' scale
        0.0
    """
    s, t = _flat_features(student_features, teacher_features, "sp_loss", min_batch=2)
    b = s.shape[0]
    with torch.no_grad():
        g_t = _sp_gram(t)
    g_s = _sp_gram(s)
    return (g_t - g_s).square().sum() / (b * b)


# --------------------------------------------------------------------------- CC


def _cc_kernel(x: Tensor, gamma: float, order: int) -> Tensor:
    u = F.normalize(x, p=2, dim=1, eps=_EPS)
    a = 2.0 * gamma * (u @ u.T)  # 2 gamma <u_i, u_j>
    term = torch.ones_like(a)
    total = term.clone()
    for p in range(1, order + 1):
        term = term * a / p
        total = total + term
    return math.exp(-2.0 * gamma) * total


def cc_loss(
    student_embedding: Tensor,
    teacher_embedding: Tensor,
    gamma: float = CC_GAMMA,
    order: int = CC_ORDER,
) -> Tensor:
    """Correlation congruence (Peng et al. 2019), unweighted.

    Each embedding row is L2-normalised to ``u_i``. For unit vectors
    ``||u_i - u_j||**2 = 2 - 2 <u_i, u_j>``, so the Gaussian RBF kernel is

    ``k(u_i, u_j) = exp(-gamma ||u_i - u_j||**2) = exp(-2 gamma) * exp(2 gamma <u_i, u_j>)``

    and its Taylor series of order ``P`` (``order``) around ``<u_i, u_j> = 0`` is

    ``C[i, j] = exp(-2 gamma) * sum_{p=0}^{P} (2 gamma <u_i, u_j>)**p / p!``.

    The loss is ``||C_T - C_S||_F**2 / B**2``.

    Args:
        student_embedding: ``(B, ...)`` student embedding, flattened to ``(B, D_s)``.
        teacher_embedding: ``(B, ...)`` teacher embedding, flattened to ``(B, D_t)``; detached.
        gamma: kernel width ``gamma > 0`` (0.4 in the paper).
        order: Taylor order ``P >= 1`` (2 in the paper).

    Returns:
        A scalar float32 tensor, differentiable in ``student_embedding`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, a tensor has fewer than 2 dimensions,
            ``gamma <= 0`` or ``order < 1``.

    Example:
        >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        >>> # C_S is 2.12 e^-0.8 everywhere; C_T is 2.12 e^-0.8 on the diagonal, e^-0.8 off it
        >>> round(cc_loss(s, t).item(), 4)  # 2 * (1.12 e^-0.8)**2 / 4
        0.1266
    """
    if not gamma > 0:
        raise SemvecValueError(f"cc_loss: gamma must be > 0, got {gamma}.")
    check_int("cc_loss: order", order, 1)
    s, t = _flat_features(student_embedding, teacher_embedding, "cc_loss", min_batch=2)
    b = s.shape[0]
    with torch.no_grad():
        c_t = _cc_kernel(t, gamma, order)
    c_s = _cc_kernel(s, gamma, order)
    return (c_t - c_s).square().sum() / (b * b)


# --------------------------------------------------------------------------- PKT


def _pkt_conditional(x: Tensor, eps: float) -> Tensor:
    u = x / (x.norm(p=2, dim=1, keepdim=True) + eps)
    sim = (u @ u.T + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(student_features: Tensor, teacher_features: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018), unweighted.

    Rows are divided by ``(norm + eps)``; the cosine kernel ``K = (U U.T + 1) / 2`` lies in
    ``[0, 1]``; each row of ``K`` (diagonal included) is divided by its sum, giving the
    conditional probabilities ``P[i, j] = p(j | i)``. The loss is

    ``sum_{i, j} P_T[i, j] * log((P_T[i, j] + eps) / (P_S[i, j] + eps)) / B**2``,

    that is, the mean over all ``B**2`` entries, as in the authors' code: the per-row
    ``KL(P_T[i] || P_S[i])`` summed over rows, divided by ``B**2`` (not ``B``). This small
    scale is why the usual weight :data:`PKT_WEIGHT` is 30000.

    Args:
        student_features: ``(B, ...)`` student features, flattened to ``(B, D_s)``.
        teacher_features: ``(B, ...)`` teacher features, flattened to ``(B, D_t)``; detached.
        eps: small constant in the normalisation and inside the logarithm.

    Returns:
        A scalar float32 tensor, differentiable in ``student_features`` only.

    Raises:
        ValueError: batch sizes differ, ``B < 2``, a tensor has fewer than 2 dimensions
            or ``eps < 0``.

    Example:
        >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> round(pkt_loss(s, t).item(), 4)  # rows: P_T = [2/3, 1/3], P_S ~ [0.5395, 0.4605]
        0.0167
    """
    if not eps >= 0:
        raise SemvecValueError(f"pkt_loss: eps must be >= 0, got {eps}.")
    s, t = _flat_features(student_features, teacher_features, "pkt_loss", min_batch=2)
    with torch.no_grad():
        p_t = _pkt_conditional(t, eps)
    p_s = _pkt_conditional(s, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()
