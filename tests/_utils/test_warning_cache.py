"""``WarningCache``: once per key, rank zero only, messages built with their owner's name."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import embed_neurons
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.batches import labels_of_batch


def test_each_key_is_warned_once():
    messages = WarningCache("owner")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        said = [messages.warn("a", "first"), messages.warn("a", "second"), messages.warn("b", "third")]
    assert said == [True, False, True]
    assert [str(w.message) for w in record] == ["first", "third"]
    messages.clear()
    with pytest.warns(UserWarning, match="again"):
        messages.warn("a", "again")


def test_other_ranks_say_nothing(monkeypatch):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WarningCache("owner").warn("a", "not on rank 1")


def test_notes_take_the_owners_level_and_muted_keys_are_never_said(caplog):
    callback_like = WarningCache("SemanticVectorCallback")
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        labels_of_batch((torch.zeros(2, 3), torch.tensor([0, 1])), None, None, callback_like)
    assert "SemanticVectorCallback: the number of classes is unknown" in caplog.text
    embedding_like = WarningCache("embed_neurons", notes="warn", muted=("no-labels",))
    with pytest.warns(UserWarning, match="^embed_neurons: the number of classes is unknown"):
        labels_of_batch((torch.zeros(2, 3), torch.tensor([0, 1])), None, None, embedding_like)
    assert not embedding_like.note("no-labels", "muted")


def test_embedding_messages_name_the_embedding_function():
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU())
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,))), batch_size=8)
    with pytest.warns(UserWarning) as record:
        embed_neurons(net, data, layers=["0"], dim=2)
    texts = [str(w.message) for w in record if "number of classes" in str(w.message)]
    assert texts and all(t.startswith("embed_neurons: ") for t in texts)
    assert not any("SemanticVectorCallback" in str(w.message) for w in record)
