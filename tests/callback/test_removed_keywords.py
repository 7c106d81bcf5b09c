"""``defer_update`` / ``defer`` were removed in 0.2: accepted for one release, with a warning, to no effect."""

import pytest
import torch

from lightning_semvec import SemanticVectorCallback, SemanticVectors


def test_defer_update_warns_and_changes_nothing():
    with pytest.warns(FutureWarning, match=r"SemanticVectorCallback\(defer_update=...\) was removed"):
        callback = SemanticVectorCallback(layers="fc", dim=4, defer_update=True)
    assert callback.vectors.dim == 4
    assert not hasattr(callback, "defer_update")


def test_an_unknown_keyword_is_still_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'defer_updates'"):
        SemanticVectorCallback(layers="fc", defer_updates=True)


def test_the_callback_takes_at_most_14_parameters():
    import inspect

    parameters = [
        p for p in inspect.signature(SemanticVectorCallback).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    assert len(parameters) <= 14, [p.name for p in parameters]


def test_step_defer_warns_and_steps_synchronously():
    activations = {"fc": torch.randn(16, 5, generator=torch.Generator().manual_seed(0))}
    plain, deferred = SemanticVectors(dim=3, seed=0), SemanticVectors(dim=3, seed=0)
    expected = plain.step(activations)
    with pytest.warns(FutureWarning, match=r"SemanticVectors.step\(defer=...\) was removed"):
        result = deferred.step(activations, defer=True)
    assert result is not None and result.names == expected.names
    assert torch.equal(deferred["fc"], plain["fc"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'later'"):
        deferred.step(activations, later=True)
