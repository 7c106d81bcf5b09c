"""``defer_update=True``: the update runs on a worker thread and gives the synchronous vectors,
bit for bit (resume and DDP: tests/test_callback_resume.py, tests/test_callback_ddp.py)."""

import copy
import gc
import pickle
import threading
import time
import weakref

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback, SemanticVectors
from lightning_semvec.vectors.semantic_vectors import state_key


def fit(defer, **overrides):
    pl.seed_everything(0, verbose=False)
    model = TinyConvNet()
    # The validation analysis reads the vectors mid-fit (it must join), and logging every
    # 4th step makes those steps synchronous: both paths mix in one run.
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=3,
                                    defer_update=defer, analysis=AnalysisOptions(
                                        projector=False, figures=False, finish_vectors=False))
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        max_epochs=3, limit_val_batches=None, log_every_n_steps=4, **overrides))
    trainer.fit(model)
    return model, semvec


def test_deferred_updates_equal_the_synchronous_ones_bit_for_bit(monkeypatch):
    sync_model, sync = fit(False)
    submitted = []
    submit = SemanticVectors._submit
    monkeypatch.setattr(SemanticVectors, "_submit",
                        lambda self, *args: (submitted.append(1), submit(self, *args))[1])
    model, deferred = fit(True)
    # The equality means something only if the callback deferred: 18 updates, of which the
    # 4 logging ones (steps 4, 8, 12, 16) run at once.
    assert len(submitted) == 14
    assert deferred.training_steps == sync.training_steps == 18
    for name, expected in sync.semantic_vectors.items():
        assert torch.equal(deferred.semantic_vectors[name], expected), name
    assert deferred.skipped_steps() == sync.skipped_steps()
    for name, loss in sync.vectors.last_losses().items():
        assert torch.equal(deferred.vectors.last_losses()[name], loss), name
    expected_state = sync.vectors.optimizer.state_dict()["state"]
    for key, state in deferred.vectors.optimizer.state_dict()["state"].items():
        for entry, value in state.items():
            assert torch.equal(value, expected_state[key][entry]), (key, entry)
    assert deferred.fidelity == sync.fidelity  # the analysis read the same vectors
    for (name, expected), actual in zip(sync_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(actual, expected), name  # the model never sees the callback


def acts(seed):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(32, 5, generator=g), "b": torch.randn(32, 7, generator=g).relu()}


def slowed(vectors):
    """A deferred step that takes 0.2 s: a read that did not join would see the step before."""
    step_now = vectors._step_now

    def slow(*args):
        time.sleep(0.2)
        return step_now(*args)

    vectors._step_now = slow
    return vectors


def test_every_read_joins_the_step_in_flight():
    sync, deferred = SemanticVectors(dim=4), slowed(SemanticVectors(dim=4))
    for seed in range(3):
        sync.step(acts(seed))
        assert deferred.step(acts(seed), defer=True) is None
    # Each of these joins first: they see the third step, not the second.
    assert torch.equal(deferred["b"], sync["b"])
    deferred.step(acts(3), defer=True)
    sync.step(acts(3))
    assert all(torch.equal(deferred.state_dict()[k], v) for k, v in sync.state_dict().items()
               if isinstance(v, torch.Tensor))
    deferred.step(acts(4), defer=True)
    sync.step(acts(4))
    del deferred._step_now  # (the slow wrapper cannot be pickled)
    copied = copy.deepcopy(deferred)  # a spawned process gets a pickled copy, without the thread
    restored = pickle.loads(pickle.dumps(deferred))
    for other in (copied, restored):
        assert other._deferred is None and other._executor is None
        assert all(torch.equal(v, sync.vectors()[k]) for k, v in other.vectors().items())
    # The copy defers steps on a thread of its own; the other reads join as well.
    bad = {**acts(5), "a": torch.full((32, 5), float("nan"))}
    assert slowed(copied).step(bad, defer=True) is None
    sync.step(bad)
    assert copied.skipped_steps() == sync.skipped_steps() == {"a": 1, "b": 0}
    copied.step(acts(6), defer=True)
    sync.step(acts(6))
    assert torch.equal(copied.vectors()["a"], sync.vectors()["a"])
    copied.step(acts(7), defer=True, with_losses=True)
    sync.step(acts(7), with_losses=True)
    assert all(torch.equal(v, sync.last_losses()[k]) for k, v in copied.last_losses().items())


def test_an_error_of_a_deferred_step_is_raised_at_the_next_join(monkeypatch):
    vectors = SemanticVectors(dim=4)
    vectors.step(acts(0))
    before = vectors.vectors()

    def broken(*args):
        raise RuntimeError("boom in the worker")

    monkeypatch.setattr(vectors, "_step_now", broken)
    vectors.step(acts(1), defer=True)
    with pytest.raises(RuntimeError, match="boom in the worker"):
        vectors.vectors()
    monkeypatch.undo()
    # The failed step changed nothing, and the next read does not raise it again.
    assert all(torch.equal(v, before[k]) for k, v in vectors.vectors().items())


def test_a_new_layers_shape_error_is_raised_by_the_deferring_call_itself():
    vectors = SemanticVectors(dim=4)
    vectors.step(acts(0), defer=True)
    with pytest.raises(ValueError, match="now has 9 neurons"):
        vectors.step({"a": torch.randn(32, 9)}, defer=True)


def test_defer_update_must_be_a_bool():
    with pytest.raises(TypeError, match="defer_update must be True or False"):
        SemanticVectorCallback(layers="fc", defer_update="yes")


def test_vectors_that_deferred_a_step_are_freed_with_their_thread():
    # The worker thread must not keep the vectors (and their optimizer, on the GPU maybe)
    # alive once nothing else refers to them, nor keep running itself.
    vectors = SemanticVectors(dim=4)
    before = set(threading.enumerate())
    vectors.step(acts(0), defer=True)
    vectors.wait()
    (worker,), alive = set(threading.enumerate()) - before, weakref.ref(vectors)
    assert worker is not None and worker.is_alive()
    del vectors
    gc.collect()
    assert alive() is None
    worker.join(timeout=5)
    assert not worker.is_alive() and worker not in threading.enumerate()


@pytest.mark.parametrize("read", [
    lambda v: v.skipped_counts()["a"].clone(),
    lambda v: v.optimizer.state_dict()["state"][0]["exp_avg"].clone(),
    lambda v: v.to("cpu") and v.layers[v._names["a"]].vectors.detach().clone(),
], ids=["skipped_counts", "optimizer", "to"])
def test_the_other_reads_join_as_well(read):
    sync, deferred = SemanticVectors(dim=4), slowed(SemanticVectors(dim=4))
    bad = {**acts(2), "a": torch.full((32, 5), float("nan"))}  # skipped: the counter moves
    for batch in (acts(0), acts(1), bad):
        sync.step(batch)
        deferred.step(batch, defer=True)
    assert torch.equal(read(deferred), read(sync))


def test_loading_a_state_joins_first_so_the_loaded_state_wins():
    source = SemanticVectors(dim=4)
    source.step(acts(0))
    saved = copy.deepcopy(source.state_dict())
    deferred = slowed(SemanticVectors(dim=4))
    deferred.step(acts(1))
    deferred.step(acts(2), defer=True)  # in flight while the state is loaded
    deferred.load_state_dict(saved)
    assert torch.equal(deferred["a"].detach(), saved[state_key("a")])


class Crashing(TinyConvNet):
    def training_step(self, batch, batch_idx):
        if self.global_step == 1:  # right after the first (deferred) update, before a join
            raise RuntimeError("the model's own error")
        return super().training_step(batch, batch_idx)


def test_a_crashed_fit_keeps_its_own_error_when_the_deferred_update_fails_too(monkeypatch):
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3, defer_update=True, analysis=None)

    def broken(*args):
        raise ValueError("the worker's error")

    monkeypatch.setattr(semvec.vectors, "_step_now", broken)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1))
    with pytest.warns(UserWarning, match="the deferred update also failed"):
        with pytest.raises(RuntimeError, match="the model's own error"):
            trainer.fit(Crashing())
    # Without a crash, the worker's error is raised by teardown at the latest.
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3, defer_update=True, analysis=None)
    monkeypatch.setattr(semvec.vectors, "_step_now", broken)
    with pytest.raises(ValueError, match="the worker's error"):
        pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_steps=1)).fit(TinyConvNet())
