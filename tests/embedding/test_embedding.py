"""embed_neurons: post-hoc vectors at the optimum, the model left as it was, clear errors."""

from __future__ import annotations

import re

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import TinyConvNet, make_data, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import SemvecError, embed_neurons
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.functional import alignment_loss, semantic_fidelity
from lightning_semvec.functional.neuron_statistics import spearman_upper_triangle
from lightning_semvec.functional.similarity import (
    activation_similarity,
    normalize_vectors,
)
from lightning_semvec.models import ImageClassifier


@pytest.fixture(scope="module")
def trained_digits():
    """A small CNN trained for 160 steps on the digits, with its train loader and held-out
    images (validation and test splits: 540 images; with 270 the held-out similarity itself
    is noisy enough to move fidelity by about 0.005)."""
    pl.seed_everything(0, verbose=False)
    data = DigitsDataModule(batch_size=64)
    data.setup()
    model = ImageClassifier("small_cnn_student")
    pl.Trainer(**trainer_kwargs(max_steps=160, max_epochs=None)).fit(model, data)
    train = DataLoader(data.train_dataset, batch_size=256)
    held_out = torch.cat([data.val_dataset.tensors[0], data.test_dataset.tensors[0]])
    return model, train, held_out


def layer_activations(model: nn.Module, name: str, images: torch.Tensor) -> torch.Tensor:
    """The (M, N) activations of one layer (mean over positions), read by hand."""
    out = []
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda m, i, o: out.append(o.mean(dim=(2, 3)) if o.ndim == 4 else o))
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return out[0].double()


def brute_force_best_fidelity(s: torch.Tensor, alive: torch.Tensor, dim: int) -> float:
    """Spearman's rho of the rank-d optimum of ``s``: its full eigendecomposition, in float64."""
    keep = alive.nonzero().squeeze(1)
    block = s[keep][:, keep].double()
    values, vectors = torch.linalg.eigh(block)
    top = vectors[:, -dim:] * values[-dim:].clamp_min(0).sqrt()
    unit = normalize_vectors(top)
    return spearman_upper_triangle(block, (unit @ unit.T).double()).item()


@pytest.mark.parametrize("layer", ["net.classifier.2", "net.features.2"])
def test_post_hoc_vectors_reach_the_brute_force_optimum(trained_digits, layer):
    model, train, held_out = trained_digits
    knowledge = embed_neurons(model, train, [layer], dim=8)
    vectors = knowledge[layer].vectors

    # In sample: no lower loss than the embedding's is found by 400 Adam steps on the loss
    # computed straight from all the training activations, from the eigen start.
    acts = torch.cat([layer_activations(model, layer, x) for x, _ in train]).float()
    s_train = activation_similarity(acts).double()
    alive = s_train.diagonal() > 0
    keep = alive.nonzero().squeeze(1)
    values, eig = torch.linalg.eigh(s_train[keep][:, keep])
    start = torch.zeros(acts.shape[1], 8, dtype=torch.float64)
    start[keep] = eig[:, -8:] * values[-8:].clamp_min(0).sqrt()
    brute = start.float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([brute], lr=1e-2)
    for _ in range(400):
        optimizer.zero_grad()
        loss, _ = alignment_loss(acts, brute, form="dense")
        loss.backward()
        optimizer.step()
    ours, _ = alignment_loss(acts, vectors, form="dense")
    eigen_start, _ = alignment_loss(acts, start.float(), form="dense")
    assert ours.item() <= loss.item() + 1e-6
    assert ours.item() < eigen_start.item()

    # Held out: fidelity within 0.005 of the rank-d optimum of the held-out similarity itself.
    held = layer_activations(model, layer, held_out).float()
    s_held = activation_similarity(held)
    alive_held = s_held.diagonal() > 0
    fidelity = semantic_fidelity(s_held, alive_held, vectors)["spearman"].item()
    optimum = brute_force_best_fidelity(s_held, alive_held, 8)
    assert fidelity >= optimum - 0.005, (fidelity, optimum)


def test_statistics_metadata_and_every_layer(trained_digits):
    model, train, _ = trained_digits
    knowledge = embed_neurons(
        model, train, ["net.features.*", "net.classifier.1"], dim=4, num_classes=10,
        class_names=[str(i) for i in range(10)], layer_options={"net.features.0": {
            "reduction": "positions"}}, training_steps=160,
    )
    assert knowledge.layer_names == [
        "net.features.0", "net.features.1", "net.features.2", "net.features.3", "net.features.4",
        "net.classifier.1"]
    assert knowledge["net.features.0"].reduction == "positions"
    assert knowledge.training_steps == 160 and knowledge.class_names[3] == "3"
    stats = knowledge["net.classifier.1"].statistics
    assert stats["class_means"].shape == (10, 32) and stats["dead"].shape == (32,)
    assert float(knowledge.extra["fidelity/net.classifier.1"]) > 0.99
    assert knowledge.source_model.endswith("ImageClassifier")


def recorded_state(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in model.modules()],
        {p.device for p in model.parameters()},
    )


def assert_unchanged(model: nn.Module, before) -> None:
    weights, modes, hooks, devices = recorded_state(model)
    assert weights.keys() == before[0].keys()
    for key, value in weights.items():
        assert torch.equal(value, before[0][key]), key
    assert modes == before[1]
    assert hooks == before[2]
    assert devices == before[3]
    assert model._trainer is None


class Failing:
    """A dataloader whose second batch raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __iter__(self):
        yield next(iter(DataLoader(make_data(16), batch_size=16)))
        raise self.error

    def __len__(self) -> int:
        return 2


def test_model_is_left_exactly_as_it_was_also_after_an_exception():
    model = TinyConvNet()
    model.train()
    model.features[0].eval()  # a frozen stem, say: mixed modes must come back as they were
    user_hook = model.features[2].register_forward_hook(lambda *args: None)
    before = recorded_state(model)
    embed_neurons(model, DataLoader(make_data(48), batch_size=16), ["features.*"], dim=3)
    assert_unchanged(model, before)
    with pytest.raises(RuntimeError, match="disk gone"):
        embed_neurons(model, Failing(RuntimeError("disk gone")), ["features.*"], dim=3)
    assert_unchanged(model, before)
    user_hook.remove()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": ["features.9"]}, "Layer 'features.9' matches no module of TinyConvNet"),
        ({"dim": 0}, "dim must be an integer >= 2"),
        ({"layers": ["classifier.2"], "dataloader": []}, "the dataloader gave no batches"),
        ({"layers": ["classifier.2"], "trainer": {"limit_val_batches": 0}},
         "the dataloader gave no batches"),
        ({"layers": [nn.Linear(2, 2)]}, "is not a submodule of TinyConvNet"),
        ({"trainer": {"precision": "bf16-true"}}, "use 'bf16-mixed'"),
        ({"trainer": {"strategy": "ddp_spawn", "devices": 2, "accelerator": "cpu"}},
         "cannot use the spawning strategy"),
        ({"trainer": "gpu"}, "trainer must be a lightning.pytorch.Trainer"),
        ({"passes": 0}, "passes must be an integer >= 1"),
        ({"dim": 1}, "dim must be an integer >= 2, got 1. (a 1-d unit vector is +1 or -1"),
        ({"input_fn": 3}, "input_fn must be a callable"),
        # Checked before any pass (these failed only after it, or with a bare TypeError).
        ({"num_classes": "3"}, "num_classes must be an integer >= 1"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
        ({"num_classes": 3, "class_names": ["x", "y"]}, "class_names has 2 names but num_classes=3"),
        ({"class_names": "xyz"}, "class_names must be a list of strings"),
        ({"layers": None}, "layers must be a module name, a glob pattern"),
    ],
)
def test_bad_input_is_one_clear_error_and_changes_nothing(kwargs, message):
    model = TinyConvNet()
    before = recorded_state(model)
    arguments = {"dataloader": DataLoader(make_data(32), batch_size=16), "layers": ["features.*"],
                 **kwargs}
    with pytest.raises(SemvecError, match=re.escape(message)):
        embed_neurons(model, **arguments)
    assert_unchanged(model, before)


def test_a_layer_of_two_neurons_and_a_layer_never_called_are_refused():
    net = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 5))
    data = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=8)
    with pytest.raises(SemvecError, match="layer '0' has 2 neurons"):
        embed_neurons(net, data, ["0"], dim=2)

    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 5), nn.Linear(4, 5)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(SemvecError, match=r"layers \['unused'\] were never called"):
        embed_neurons(Skips(), data, ["used", "unused"], dim=2)


def low_rank_activations(n: int, rank: int = 5, samples: int = 600, seed: int = 0,
                         relu: bool = True):
    """Rank-``rank`` activations plus a little noise (through a ReLU: no longer low rank)."""
    g = torch.Generator().manual_seed(seed)
    low_rank = torch.randn(samples, rank, generator=g) @ torch.randn(rank, n, generator=g)
    return (torch.relu(low_rank) if relu else low_rank) + 0.01 * torch.randn(samples, n, generator=g)


def test_sketched_wide_layer_matches_the_exact_one_on_a_low_rank_stream():
    acts = low_rank_activations(300)
    data = DataLoader(TensorDataset(acts), batch_size=100)
    net = nn.Sequential(nn.Identity())
    exact = embed_neurons(net, data, ["0"], dim=6)["0"].vectors
    sketched = {passes: embed_neurons(net, data, ["0"], dim=6, exact_max_neurons=100,
                                      passes=passes)["0"].vectors for passes in (1, 2)}
    s = activation_similarity(acts)
    alive = torch.ones(300, dtype=torch.bool)
    reference = semantic_fidelity(s, alive, exact)["spearman"].item()
    fidelity = {passes: semantic_fidelity(s, alive, vectors)["spearman"].item()
                for passes, vectors in sketched.items()}
    assert fidelity[2] >= reference - 1e-3, (fidelity, reference)
    assert fidelity[2] >= fidelity[1] - 1e-4, fidelity  # the power pass helps
    loss_exact, _ = alignment_loss(acts, exact)
    loss_sketch, _ = alignment_loss(acts, sketched[2])
    assert loss_sketch.item() <= loss_exact.item() * 1.02 + 1e-6


def test_sketch_eigenvalues_approach_the_exact_ones_with_a_power_pass():
    from lightning_semvec.metrics import SketchedSimilarity

    acts = low_rank_activations(200, rank=8, relu=False)
    exact = torch.linalg.eigvalsh(activation_similarity(acts).double()).flip(0)[:8].float()
    sketch = SketchedSimilarity(200, rank=12)
    for batch in acts.split(128):
        sketch.update(batch)
    one_pass, _, _ = sketch.compute()
    test_matrix = sketch.power_test_matrix()
    sketch.reset()
    sketch.set_test_matrix(test_matrix)
    for batch in acts.split(128):
        sketch.update(batch)
    two_passes, vectors, alive = sketch.compute()
    error_one = (one_pass[:8] - exact).abs().max().item()
    error_two = (two_passes[:8] - exact).abs().max().item()
    assert error_two <= error_one + 1e-9 and error_two < 1e-4 * exact[0].item()
    assert alive.all() and torch.allclose(vectors.T @ vectors, torch.eye(12), atol=1e-5)


class _DictImages(torch.utils.data.Dataset):
    """Batches as dicts, as Hugging Face datasets give them."""

    def __init__(self) -> None:
        self.images, self.labels = make_data(32).tensors

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "label": self.labels[index]}


def test_dict_batches_without_input_fn_are_one_clear_error_naming_the_keys():
    loader, model = DataLoader(_DictImages(), batch_size=8), TinyConvNet()
    before = recorded_state(model)
    # Before: torch's "conv2d() received an invalid combination of arguments" from the model.
    with pytest.raises(SemvecError, match=re.escape(
            "The batches are dicts (keys ['pixel_values', 'label']), so which entry the model takes is not "
            "known: pass input_fn, e.g. input_fn=lambda batch: batch['pixel_values']")):
        embed_neurons(model, loader, ["features.*"], dim=3)
    assert_unchanged(model, before)
    knowledge = embed_neurons(model, loader, ["features.*"], dim=3, input_fn=lambda batch: batch["pixel_values"],
                              label_fn=lambda batch: batch["label"], num_classes=3)
    assert knowledge["features.2"].statistics["class_counts"].sum() == 32
