"""`embed_neurons` and `embed_models` say when their in-sample fidelity is 1 whatever the neurons
do: dim at least the neurons that vary (issue 22, item 5)."""

from __future__ import annotations

import logging
import re
import warnings

import pytest
from tiny_models import QUIET, data, mlp

from lightning_semvec import embed_models, embed_neurons


def fidelity_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "in-sample fidelity" in r.getMessage()]


@pytest.mark.parametrize(("dim", "trivial"), [(16, True), (4, False)])
def test_embed_neurons_says_when_the_fidelity_is_trivially_one(caplog, dim, trivial) -> None:
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed_neurons(mlp(0), data(), ["3"], dim=dim, trainer=QUIET)  # 12 neurons
    (line,) = fidelity_lines(caplog)
    assert ("trivially 1: dim=16 is at least its 12 neurons that vary" in line) is trivial
    assert ("a dim below 12, such as 6" in line) is trivial


def test_embed_models_says_it_of_the_joint_space(caplog) -> None:
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed_models({"a": mlp(0), "b": mlp(1)}, data(), {"a": ["3"], "b": ["3"]}, dim=32,
                     trainer=QUIET)
    (line,) = fidelity_lines(caplog)
    assert "joint space" in line
    assert re.search(r"trivially 1: dim=32 is at least its 2\d neurons that vary", line)
