"""The callback finishes its vectors at the end of fit: the best fit of the last analysed
validation pass's activation similarity, when that pass saw the final network."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tiny_models import TinyConvNet, make_data, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.functional.optimal_embedding import (
    dense_alignment_loss,
    optimal_vectors,
)
from lightning_semvec.metrics import ActivationSimilarity

LAYERS = ["features.0", "features.2"]


def fit(finish: bool, **trainer_options):
    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(LAYERS, dim=3, analysis=AnalysisOptions(
        projector=False, figures=False, finish_vectors=finish))
    model = TinyConvNet()
    options = {"max_epochs": 2, "limit_val_batches": None, **trainer_options}
    pl.Trainer(callbacks=[semvec], **trainer_kwargs(**options)).fit(model)
    return semvec, model


def validation_similarity(model, layer):
    """The activation similarity of the validation data (32 images) through the final model."""
    images = make_data(32, seed=1).tensors[0]
    out = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: out.append(o.mean(dim=(2, 3))))
    model.eval()
    with torch.no_grad():
        model(images)
    handle.remove()
    metric = ActivationSimilarity(out[0].shape[1])
    metric.update(out[0])
    return metric.compute()


def test_vectors_are_finished_to_the_optimum_of_the_last_validation_pass():
    online, _ = fit(finish=False)
    finished, model = fit(finish=True)
    for layer in LAYERS:
        s, alive = validation_similarity(model, layer)
        before = dense_alignment_loss(torch.nn.functional.normalize(
            online.semantic_vectors[layer], dim=1), s, alive).item()
        after = dense_alignment_loss(finished.semantic_vectors[layer], s, alive).item()
        optimum = dense_alignment_loss(optimal_vectors(s, alive, 3), s, alive).item()
        assert after <= optimum + 1e-6, (layer, after, optimum)
        assert after < 0.5 * before, (layer, after, before)
        # Turned to face the online vectors: each neuron's finished vector points roughly
        # where training left it.
        cosine = torch.nn.functional.cosine_similarity(
            finished.semantic_vectors[layer], online.semantic_vectors[layer], dim=1)
        assert cosine.mean() > 0.5, (layer, cosine)
    knowledge = finished.to_knowledge()
    torch.testing.assert_close(knowledge["features.2"].vectors,
                               finished.semantic_vectors["features.2"])


def test_vectors_are_not_finished_on_a_pass_that_saw_an_earlier_network(caplog):
    # Stopped by max_steps in the middle of the second epoch: the last validation ran at the
    # end of the first one, on another network.
    online, _ = fit(finish=False, max_epochs=None, max_steps=9)
    kept, _ = fit(finish=True, max_epochs=None, max_steps=9)
    for layer in LAYERS:
        torch.testing.assert_close(kept.semantic_vectors[layer], online.semantic_vectors[layer])
