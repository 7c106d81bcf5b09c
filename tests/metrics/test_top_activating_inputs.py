"""TopActivatingInputs: the streamed top inputs equal those of the whole set, under DDP too."""

import pytest
import torch

import lightning_semvec.projector
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.metrics import TopActivatingInputs
from lightning_semvec.projector import to_thumbnails


def test_top_inputs_streamed_equal_the_top_inputs_of_the_whole_set():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(50, 6, generator=g)
    images = torch.rand(50, 3, 9, 7, generator=g)
    top = TopActivatingInputs(num_neurons=6, k=3, size=4)
    for start, stop in ((0, 2), (2, 19), (19, 20), (20, 50)):
        top.update(acts[start:stop], images[start:stop])
    out = top.compute()
    values, index = acts.T.topk(3, dim=1)
    assert torch.equal(out["values"], values)
    assert torch.equal(out["thumbnails"], to_thumbnails(images, 4)[index])


@pytest.mark.filterwarnings("ignore:.*was called before the ``update``")
def test_top_inputs_merge_gathered_candidates_of_several_processes():
    g = torch.Generator().manual_seed(1)
    acts, images = torch.randn(40, 5, generator=g), torch.rand(40, 1, 8, 8, generator=g)
    ranks = [TopActivatingInputs(5, k=2, size=3) for _ in range(2)]
    ranks[0].update(acts[0::2], images[0::2])
    ranks[1].update(acts[1::2], images[1::2])
    merged = TopActivatingInputs(5, k=2, size=3)
    # What torchmetrics leaves after its gather (dist_reduce_fx=None): states stacked by rank.
    merged.values = torch.stack([r.values for r in ranks])
    merged.thumbnails = torch.stack([r.thumbnails for r in ranks])
    whole = TopActivatingInputs(5, k=2, size=3)
    whole.update(acts, images)
    for key in ("values", "thumbnails"):
        assert torch.equal(merged.compute()[key], whole.compute()[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_neurons=0), "num_neurons must be an integer >= 1, got 0"),
        (dict(num_neurons=True), "num_neurons must be an integer >= 1, got True"),
        (dict(num_neurons=3, k=0), "k must be an integer >= 1, got 0"),
        (dict(num_neurons=3, size=2.0), "size must be an integer >= 1, got 2.0"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(SemvecValueError, match=match):
        TopActivatingInputs(**kwargs)


def test_bad_batches_are_clear_errors():
    top = TopActivatingInputs(num_neurons=3, k=1, size=4)
    with pytest.raises(ValueError, match=r"activations must be \(B, 3\), got \(2, 4\)"):
        top.update(torch.zeros(2, 4), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="Got 3 images for 2 rows of activations"):
        top.update(torch.zeros(2, 3), torch.zeros(3, 1, 8, 8))


def test_the_old_projector_import_is_the_metric():
    from lightning_semvec.projector import TopActivatingInputs as old_name

    assert old_name is TopActivatingInputs
    assert "TopActivatingInputs" not in lightning_semvec.projector.__all__  # documented in metrics
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchName'"):
        lightning_semvec.projector.NoSuchName  # noqa: B018
