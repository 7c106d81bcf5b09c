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
