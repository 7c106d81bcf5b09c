"""The joint pass's CKA under DDP (2 CPU processes, gloo): every process stores the CKA of one
process fed all the same minibatches."""

from __future__ import annotations

import pytest
import torch
from test_embedding_ddp import JOINT_SCRIPT, run_two_processes
from tiny_models import TinyConvNet, make_data
from torch.utils.data import DataLoader, Subset

from lightning_semvec import embed_models
from lightning_semvec.knowledge.joint_space import CKA_KEY, stored_cka

# Two processes start through Lightning's subprocess launcher (tens of seconds on 2 cores).
pytestmark = pytest.mark.slow

def test_every_process_stores_the_cka_of_one_process_on_the_same_minibatches(tmp_path):
    torch.manual_seed(0)
    a = TinyConvNet()
    torch.manual_seed(1)
    b = TinyConvNet()
    # Lightning's DistributedSampler gives rank r the samples r, r + 2, ...: one process reading
    # rank 0's batches of 8, then rank 1's, sees the same minibatches.
    order = [*range(0, 64, 2), *range(1, 64, 2)]
    single = embed_models({"a": a, "b": b}, DataLoader(Subset(make_data(64), order), batch_size=8),
                          ["features.2", "classifier.2"], dim=3,  # JOINT_SCRIPT's models and layers
                          trainer=dict(logger=False, enable_progress_bar=False,
                                       enable_model_summary=False))
    expected = stored_cka(single)
    assert expected is not None and expected.minibatches == 8
    run_two_processes(JOINT_SCRIPT, tmp_path)
    extra = [torch.load(tmp_path / f"joint{rank}.pt")["extra"] for rank in (0, 1)]
    assert extra[0][CKA_KEY] == extra[1][CKA_KEY]  # the same text on every process
    for rank in (0, 1):
        single.extra[CKA_KEY] = extra[rank][CKA_KEY]
        cka = stored_cka(single)
        assert cka is not None and cka.minibatches == 8  # 4 batches on each process, all summed
        assert cka.layers == expected.layers
        # Up to the last stored decimal: the sums are added in another order.
        torch.testing.assert_close(cka.matrix, expected.matrix, atol=2e-6, rtol=0, equal_nan=True)
