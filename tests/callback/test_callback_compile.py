"""The callback's hooks survive torch.compile: registered in setup, before the first compiled call."""

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import SemanticVectorCallback


@pytest.mark.parametrize("backend", ["aot_eager"])  # dynamo tracing + AOT autograd, no codegen
def test_compiled_model_trains_with_the_callback(backend):
    pl.seed_everything(0, verbose=False)
    model = TinyConvNet()
    compiled = torch.compile(model, backend=backend)
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=3)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1))
    trainer.fit(compiled)
    vectors = semvec.semantic_vectors
    assert set(vectors) == {"features.0", "features.1", "features.2", "features.3", "classifier.2"}
    assert semvec.training_steps == trainer.global_step == 6
    assert all(torch.isfinite(v).all() for v in vectors.values())
    assert semvec.skipped_steps() == dict.fromkeys(vectors, 0)

    # The same run without compiling gives the same vectors: the hooks saw the same activations.
    pl.seed_everything(0, verbose=False)
    eager = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=3)
    pl.Trainer(callbacks=[eager], **trainer_kwargs(max_epochs=1)).fit(TinyConvNet())
    for name, v in eager.semantic_vectors.items():
        torch.testing.assert_close(vectors[name], v, rtol=1e-4, atol=1e-5)


def _compiled_fit(callbacks: list, steps: int = 6) -> tuple[dict, int, int]:
    """Fit TinyConvNet compiled with inductor: its final weights, dynamo's graph breaks, and
    the number of graphs compiled."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    pl.seed_everything(0, verbose=False)
    model = TinyConvNet()
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(max_epochs=1, limit_train_batches=steps))
    trainer.fit(torch.compile(model))  # the default backend, inductor: real code generation
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return weights, sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]


def test_hooks_inside_an_inductor_graph_break_nothing_and_leave_training_untouched():
    # The hooks run inside the compiled region. Asking a storage for its address (the copy
    # check) or the autograd engine whether it is in backward split the graph in pieces, and
    # the pieces fused differently changed the model's weights by 3e-8.
    plain, plain_breaks, plain_graphs = _compiled_fit([])
    semvec = SemanticVectorCallback(layers=["features.*", "classifier.2"], dim=3)
    hooked, hooked_breaks, hooked_graphs = _compiled_fit([semvec])
    assert (hooked_breaks, hooked_graphs) == (plain_breaks, plain_graphs)
    for name, weight in plain.items():
        assert torch.equal(hooked[name], weight), name
    assert semvec.training_steps == 6 and semvec.skipped_steps() == dict.fromkeys(semvec.semantic_vectors, 0)
