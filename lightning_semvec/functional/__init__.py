"""Pure tensor functions: similarities, alignment losses, CKA and metrics' math.

Nothing here holds state or needs Lightning; the callback, the distillation module and the
metrics are thin owners of state around these functions.
"""

from lightning_semvec.functional.agreement import (
    SimilarityAgreement,
    class_profile_similarity,
    similarity_agreement,
    symmetric_confusion,
)
from lightning_semvec.functional.alignment import (
    alignment_loss,
    alignment_loss_dense,
    alignment_loss_factorized,
    choose_alignment_form,
    gram_frobenius_sq,
)
from lightning_semvec.functional.alignment_gradient import (
    AlignmentGradients,
    alignment_gradients,
    plan_alignment_runs,
)
from lightning_semvec.functional.cka import (
    cka_from_hsic,
    linear_cka,
    pairwise_unbiased_hsic,
    unbiased_hsic,
)
from lightning_semvec.functional.fidelity import fidelity_upper_bound, semantic_fidelity
from lightning_semvec.functional.neuron_matching import NeuronMatching, match_neurons
from lightning_semvec.functional.optimal_embedding import (
    eigen_initial_vectors,
    nystrom_eigenpairs,
    optimal_vectors,
    refine_vectors,
)
from lightning_semvec.functional.similarity import (
    activation_similarity,
    normalize_vectors,
    semantic_similarity,
    standardize_activations,
    standardize_columns,
)

__all__ = [
    "AlignmentGradients",
    "NeuronMatching",
    "SimilarityAgreement",
    "activation_similarity",
    "alignment_gradients",
    "alignment_loss",
    "alignment_loss_dense",
    "alignment_loss_factorized",
    "choose_alignment_form",
    "cka_from_hsic",
    "class_profile_similarity",
    "eigen_initial_vectors",
    "fidelity_upper_bound",
    "gram_frobenius_sq",
    "linear_cka",
    "match_neurons",
    "normalize_vectors",
    "nystrom_eigenpairs",
    "optimal_vectors",
    "pairwise_unbiased_hsic",
    "plan_alignment_runs",
    "refine_vectors",
    "semantic_fidelity",
    "semantic_similarity",
    "similarity_agreement",
    "standardize_activations",
    "standardize_columns",
    "symmetric_confusion",
    "unbiased_hsic",
]
