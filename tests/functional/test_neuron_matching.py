"""match_neurons: nearest neurons of another model by cosine, dead ones left out, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional import match_neurons


def test_a_dead_neuron_is_never_a_match_even_against_negative_cosines():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # the second neuron of A is dead
    b = torch.tensor([[0.0, 0.0], [-1.0, 0.2], [-0.5, -1.0]])  # B's first is dead
    matching = match_neurons(a, b, k=3)
    assert matching.indices.tolist() == [[2, 1, -1], [-1, -1, -1]]
    assert matching.cosine[0, 0] < 0 and math.isnan(matching.cosine[0, 2])
    assert matching.cosine[1].isnan().all()
    assert matching.mutual.tolist() == [True, False]
    assert matching.correlation is None


def test_more_matches_than_neurons_of_b_are_padded_and_chunks_change_nothing():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 4, generator=g), torch.randn(3, 4, generator=g)
    s = torch.rand(50, 3, generator=g)
    whole = match_neurons(a, b, s, k=5)
    assert whole.indices.shape == (50, 5) and (whole.indices[:, 3:] == -1).all()
    assert torch.equal(whole.correlation[:, 0], s.gather(1, whole.indices[:, :1]).squeeze(1))
    chunked = match_neurons(a, b, s, k=5, chunk=7)
    assert torch.equal(chunked.indices, whole.indices)
    assert torch.equal(chunked.mutual, whole.mutual)


@pytest.mark.parametrize(
    ("a", "b", "s", "message"),
    [
        (torch.ones(3, 2), torch.ones(4, 3), None, r"one dimension d, got \(3, 2\) and \(4, 3\)"),
        (torch.ones(3), torch.ones(4, 3), None, "must be"),
        (torch.ones(0, 2), torch.ones(4, 2), None, "at least 1"),
        (torch.ones(3, 2), torch.ones(4, 2), torch.ones(4, 3), r"similarity_ab must be \(3, 4\)"),
    ],
)
def test_bad_shapes_are_one_clear_error(a, b, s, message):
    with pytest.raises(SemvecValueError, match=message):
        match_neurons(a, b, s)
