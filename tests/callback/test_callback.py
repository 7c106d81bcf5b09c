import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_models import TinyConvNet, make_data, trainer_kwargs
from torch import nn

from lightning_semvec import SemanticVectorCallback, SemanticVectors
from lightning_semvec.callback._capture import LayerCapture
from lightning_semvec.functional import (
    activation_similarity,
    alignment_loss,
    semantic_similarity,
)
from lightning_semvec.vectors.semantic_vectors import step_skipping_bad_layers


def fit(model=None, callbacks=(), seed=0, **overrides):
    pl.seed_everything(seed, verbose=False)
    model = model or TinyConvNet()
    trainer = pl.Trainer(callbacks=list(callbacks), **trainer_kwargs(**overrides))
    trainer.fit(model)
    return trainer, model


def test_learns_vectors_for_every_matched_layer():
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=3, lr=0.1)
    trainer, model = fit(callbacks=[semvec], max_epochs=10)
    vectors = semvec.semantic_vectors
    assert list(vectors) == ["features.0", "features.1", "features.2", "features.3", "classifier.2"]
    assert vectors["features.2"].shape == (6, 3) and vectors["classifier.2"].shape == (3, 3)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in vectors.values())
    # The vectors describe the data: their similarity follows the activation similarity.
    x = make_data(96).tensors[0]
    model.eval()
    with torch.no_grad():
        logits = model(x)
    s_act, s_sem = activation_similarity(logits), semantic_similarity(vectors["classifier.2"])
    iu = torch.triu_indices(3, 3, 1)
    assert (s_act[iu[0], iu[1]] - s_sem[iu[0], iu[1]]).abs().max() < 0.2
    assert semvec.training_steps == trainer.global_step


def test_model_weights_identical_with_and_without_callback():
    _, plain = fit(seed=7)
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=4)
    _, hooked = fit(callbacks=[semvec], seed=7)
    for (name, a), (_, b) in zip(plain.state_dict().items(), hooked.state_dict().items()):
        assert torch.equal(a, b), name


def test_hooks_only_in_training_and_removed_at_teardown():
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2)
    _, model = fit(callbacks=[semvec], max_epochs=1, limit_val_batches=2, num_sanity_val_steps=2)
    assert not model.classifier[2]._forward_hooks
    before = semvec.semantic_vectors["classifier.2"]
    model.eval()
    model(torch.randn(4, 1, 6, 6))
    assert torch.equal(before, semvec.semantic_vectors["classifier.2"])


def test_gradient_accumulation_updates_once_per_optimizer_step(monkeypatch):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, every_n_steps=2)
    calls = []
    original = semvec._update
    monkeypatch.setattr(semvec, "_update", lambda t, m, *rest: (calls.append(t.global_step), original(t, m, *rest)))
    trainer, _ = fit(callbacks=[semvec], max_epochs=1, accumulate_grad_batches=3)
    # 96 samples / 16 = 6 batches -> 2 optimizer steps; every 2nd step -> one update.
    assert trainer.global_step == 2 and calls == [2]


def test_two_instances_coexist_and_resume_matches_uninterrupted(tmp_path):
    def callbacks():
        return [
            SemanticVectorCallback(layers="features.*", dim=3),
            SemanticVectorCallback(layers="classifier.2", dim=2, similarity="cosine"),
        ]

    full = callbacks()
    fit(callbacks=full, max_epochs=4)

    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = callbacks()
    fit(callbacks=[*first, ckpt], max_epochs=2, enable_checkpointing=True)
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    assert {first[0].state_key, first[1].state_key} <= set(state)

    resumed = callbacks()
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=resumed, **trainer_kwargs(max_epochs=4))
    trainer.fit(TinyConvNet(), ckpt_path=tmp_path / "last.ckpt")
    for a, b in zip(full, resumed):
        for name, v in a.semantic_vectors.items():
            torch.testing.assert_close(v, b.semantic_vectors[name], rtol=1e-5, atol=1e-6)


def test_restoring_vectors_of_another_dim_is_a_clear_error():
    source = SemanticVectorCallback(layers="classifier.2", dim=2)
    fit(callbacks=[source], max_epochs=1)
    other = SemanticVectorCallback(layers="classifier.2", dim=5)
    with pytest.raises(ValueError, match="dim=2"):
        other.load_state_dict(source.state_dict())


def test_logs_losses_through_the_trainer_loggers(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    semvec = SemanticVectorCallback(layers=["classifier.2", "features.1"], dim=2)
    trainer, _ = fit(callbacks=[semvec], max_epochs=2, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    metrics = trainer.logged_metrics
    assert "semvec/classifier.2/align_loss" in metrics and "semvec/features.1/align_loss" in metrics
    assert metrics["semvec/classifier.2/skipped_steps"] == 0
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "semvec/features.1/align_loss" in text


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_keeps_everything_finite(precision):
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 16-mixed on the CPU warns about its GradScaler
        trainer, _ = fit(callbacks=[semvec], precision=precision, max_epochs=2, log_every_n_steps=1)
    for v in semvec.semantic_vectors.values():
        assert torch.isfinite(v).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in trainer.callback_metrics.values())


def test_layer_option_picks_tensor_from_tuple_output():
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(36, 5)

        def forward(self, x):
            h = self.lin(x.flatten(1))
            return h, h.sum()

    class Model(TinyConvNet):
        def __init__(self):
            super().__init__()
            self.enc = TupleOut()

        def forward(self, x):
            h, _ = self.enc(x)
            return self.classifier[2](h[:, :6].repeat(1, 2)[:, :6])

    with pytest.raises(TypeError, match="select_output"):
        fit(Model(), callbacks=[SemanticVectorCallback(layers="enc", dim=2)], max_epochs=1)
    semvec = SemanticVectorCallback(layers="enc", dim=2, layer_options={"enc": {"select_output": 0}})
    fit(Model(), callbacks=[semvec], max_epochs=1)
    assert semvec.semantic_vectors["enc"].shape == (5, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers="classifier.2", dim=0), "dim must be an integer >= 2, got 0"),
        (dict(layers=[], dim=2), "at least one layer"),
        (dict(layers="classifier.2", every_n_steps=0), "every_n_steps"),
        (dict(layers="classifier.2", similarity="dot"), "Unknown similarity 'dot'"),
        (dict(layers="classifier.2", optimizer="lbfgs"), "Unknown optimizer"),
        (dict(layers="classifier.2", lr=0.0), "lr must be a number > 0"),
        (dict(layers="classifier.2", max_neurons_per_step=1), "max_neurons_per_step"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SemanticVectorCallback(**kwargs)


def test_unmatched_layer_fails_before_training_with_close_names():
    model = TinyConvNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="classifier.2"):
        fit(model, callbacks=[SemanticVectorCallback(layers="clasifier.2")])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_vectors_before_training_raise():
    with pytest.raises(RuntimeError, match="first training step"):
        _ = SemanticVectorCallback(layers="x").semantic_vectors


def test_batch_of_one_sample_is_skipped_with_one_warning():
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2)
    with pytest.warns(UserWarning, match="only 1 sample") as record:
        fit(TinyConvNet(batch_size=1, n=4), callbacks=[semvec], max_epochs=1)
    assert sum("only 1 sample" in str(w.message) for w in record) == 1
    with pytest.raises(RuntimeError):
        _ = semvec.semantic_vectors


class NaNOnStep(pl.Callback):
    """Makes the hooked layer output NaN on chosen training batches."""

    def __init__(self, module_name, batches):
        self.module_name, self.batches, self.handle, self.current = module_name, set(batches), None, -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.current = trainer.global_step

    def setup(self, trainer, pl_module, stage):
        module = dict(pl_module.named_modules())[self.module_name]

        def poison(mod, inp, out):
            if mod.training and self.current in self.batches:
                return out * float("nan")
            return out

        # Registered before the semantic vector hook (callbacks set up in order), so it sees NaNs.
        self.handle = module.register_forward_hook(poison)


class ProbeNet(TinyConvNet):
    """A ``probe`` layer reads the features but does not feed the loss."""

    def __init__(self):
        super().__init__()
        self.probe = nn.Linear(6, 5)

    def forward(self, x):
        h = self.features(x)
        self.probe(h.detach().mean((2, 3)))
        return self.classifier(h)


def test_nan_activations_skip_the_step_and_keep_vectors():
    snapshots = {}

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots[trainer.global_step] = semvec.semantic_vectors

    semvec = SemanticVectorCallback(layers=["probe", "classifier.2"], dim=2)
    fit(ProbeNet(), callbacks=[NaNOnStep("probe", {2, 3}), semvec, Snapshot()], max_epochs=1)
    # Batches that start at global steps 2 and 3 end at steps 3 and 4: probe skipped there.
    assert torch.equal(snapshots[2]["probe"], snapshots[4]["probe"])
    assert not torch.equal(snapshots[4]["probe"], snapshots[5]["probe"])
    assert not torch.equal(snapshots[2]["classifier.2"], snapshots[4]["classifier.2"])
    assert semvec.skipped_steps() == {"probe": 2, "classifier.2": 0}
    assert all(torch.isfinite(v).all() for v in semvec.semantic_vectors.values())


class ChannelMask(nn.Module):
    def forward(self, h):
        return h * torch.tensor([0, 0, 1, 1, 1, 1.0]).view(1, 6, 1, 1)  # channels 0, 1 dead


class DeadNet(TinyConvNet):
    def __init__(self):
        super().__init__()
        self.mask = ChannelMask()

    def forward(self, x):
        return self.classifier(self.mask(self.features(x)))


def initial_vectors(semvec: SemanticVectorCallback, name: str, num_neurons: int) -> torch.Tensor:
    """The vectors a layer starts from: a fresh SemanticVectors with the callback's settings."""
    fresh = SemanticVectors(dim=semvec.dim, seed=semvec.vectors.seed)
    fresh.materialize({name: num_neurons}, torch.device("cpu"))
    return fresh[name].detach()


def test_dead_neurons_are_masked_without_nan():
    semvec = SemanticVectorCallback(layers=["mask"], dim=2)
    fit(DeadNet(), callbacks=[semvec], max_epochs=1)
    assert torch.isfinite(semvec.semantic_vectors["mask"]).all()
    assert semvec.skipped_steps() == {"mask": 0}
    # Dead neurons get no gradient: their vectors stay at their initial values.
    fresh = initial_vectors(semvec, "mask", 6)
    assert torch.equal(semvec.semantic_vectors["mask"][:2], fresh[:2])
    assert not torch.equal(semvec.semantic_vectors["mask"][2:], fresh[2:])


def test_wide_layer_trains_with_factorised_form():
    from tiny_models import WideLinearNet

    semvec = SemanticVectorCallback(layers="wide", dim=8)
    fit(WideLinearNet(width=6000), callbacks=[semvec], max_epochs=1)
    assert semvec.semantic_vectors["wide"].shape == (6000, 8)


def test_neuron_subsets_update_only_the_sampled_rows():
    from tiny_models import WideLinearNet

    semvec = SemanticVectorCallback(layers="wide", dim=4, max_neurons_per_step=100)
    fit(WideLinearNet(width=3000), callbacks=[semvec], max_epochs=1, limit_train_batches=1)
    fresh = initial_vectors(semvec, "wide", 3000)
    changed = (semvec.semantic_vectors["wide"] != fresh).any(dim=1)
    assert 90 <= int(changed.sum()) <= 100  # a sampled neuron may be dead in the batch


@pytest.mark.parametrize("sync_free", [False, True])
@pytest.mark.parametrize("fused", [False, True])  # the callback's own Adam is fused
def test_bad_layer_keeps_vectors_and_optimizer_state_on_both_paths(sync_free, fused):
    good, bad = nn.Parameter(torch.randn(4, 2)), nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.Adam([good, bad], lr=0.1, fused=fused)
    for _ in range(2):  # build some Adam state first
        (good.square().sum() + bad.square().sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    before_bad = bad.detach().clone()
    before_state = {k: v.clone() for k, v in optimizer.state[bad].items()}
    before_good = good.detach().clone()
    gradients = [2 * good.detach(), torch.zeros_like(bad)]  # a bad layer's gradient is zeros
    flags = step_skipping_bad_layers(
        optimizer, [good, bad], gradients, torch.tensor([True, False]), sync_free
    )
    assert flags == (None if sync_free else [True, False])
    assert torch.equal(bad, before_bad) and not torch.equal(good, before_good)
    assert good.grad is None and bad.grad is None
    for key, value in before_state.items():
        assert torch.equal(optimizer.state[bad][key], value), key


class SharedReLUNet(TinyConvNet):
    """One nn.ReLU module used twice, on outputs of different widths."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()
        self.lin1, self.lin2 = nn.Linear(36, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.lin2(self.act(self.lin1(self.act(x.flatten(1)))))


def test_module_reused_with_different_widths_is_a_clear_error_before_training():
    model = SharedReLUNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="more than once per forward with different widths"):
        fit(model, callbacks=[SemanticVectorCallback(layers="act", dim=2)], max_epochs=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_module_called_twice_with_one_width_is_stacked_with_a_warning():
    class Twice(TinyConvNet):
        def forward(self, x):
            h = self.features(x)
            self.classifier(h)  # a second call of the same head
            return self.classifier(h)

    semvec = SemanticVectorCallback(layers="classifier.2", dim=2)
    with pytest.warns(UserWarning, match="stacked as extra samples"):
        fit(Twice(), callbacks=[semvec], max_epochs=1)
    assert semvec.semantic_vectors["classifier.2"].shape == (3, 2)


class RecordFirstStep(pl.Callback):
    """Records each named layer's training readout in the first training step."""

    def __init__(self, semvec, names):
        self.semvec, self.names, self.seen, self.handles = semvec, names, {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        modules = dict(pl_module.named_modules())
        for name in self.names:
            def hook(module, inputs, output, name=name):
                self.seen.setdefault(name, self.semvec.readouts[name].read(output, name).clone())
            self.handles.append(modules[name].register_forward_hook(hook))

    def on_train_batch_end(self, *args):
        for handle in self.handles:
            handle.remove()
        self.handles = []


@pytest.mark.parametrize("with_wide", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # SGD's step shows the gradient's scale
def test_one_update_equals_a_step_on_the_autograd_loss_of_each_layer(with_wide, optimizer):
    """The fused closed-form update is the per-layer loss + backward + step it replaces."""
    from tiny_models import WideLinearNet

    names = ["features.0", "features.2", "features.3", "classifier.2"]
    model = TinyConvNet()
    if with_wide:
        names, model = ["wide", "head"], WideLinearNet(width=600)
    semvec = SemanticVectorCallback(
        layers=names, dim=3, lr=0.05, max_neurons_per_step=200, optimizer=optimizer
    )
    recorder = RecordFirstStep(semvec, names)
    fit(model, callbacks=[semvec, recorder], max_steps=1)
    for name in names:
        acts = recorder.seen[name]
        start = initial_vectors(semvec, name, acts.shape[1])
        vectors = nn.Parameter(start.clone())
        kind = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam
        reference = kind([vectors], lr=0.05, foreach=False)
        subset = semvec.vectors.neuron_subset(acts.shape[1], 0, torch.device("cpu"))
        used = vectors if subset is None else vectors.index_select(0, subset)
        loss, _ = alignment_loss(acts if subset is None else acts[:, subset], used)
        loss.backward()
        reference.step()
        assert (subset is not None) == (name == "wide")
        torch.testing.assert_close(semvec.semantic_vectors[name], vectors.detach(), rtol=1e-4, atol=1e-5)


def test_wide_layer_keeps_only_its_subset_from_the_hook(monkeypatch):
    """Only (M, K) numbers of a wider layer outlive the forward; the default K is 4096."""
    from tiny_models import WideLinearNet

    semvec = SemanticVectorCallback(layers=["wide", "head"], dim=4)
    assert semvec.vectors.max_neurons_per_step == 4096
    shapes = []
    original = semvec._update
    monkeypatch.setattr(semvec, "_update", lambda t, m, acts, *rest: (
        shapes.append({n: tuple(a.shape) for n, a in acts.items()}), original(t, m, acts, *rest)))
    fit(WideLinearNet(width=5000), callbacks=[semvec], max_steps=2)
    assert shapes == [{"wide": (16, 4096), "head": (16, 3)}] * 2
    assert semvec.semantic_vectors["wide"].shape == (5000, 4)


def test_layers_are_read_only_on_the_steps_that_update(monkeypatch):
    semvec = SemanticVectorCallback(layers="classifier.2", dim=2, every_n_steps=3)
    reads, updates = [], []
    original_add, original_update = LayerCapture.add, semvec._update
    monkeypatch.setattr(LayerCapture, "add", lambda *a, **k: (reads.append(1), original_add(*a, **k)))
    monkeypatch.setattr(semvec, "_update", lambda t, *rest: (updates.append(t.global_step),
                                                             original_update(t, *rest)))
    fit(callbacks=[semvec], max_steps=9)
    assert updates == [3, 6, 9] and len(reads) == 3
