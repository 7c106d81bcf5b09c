"""embed_models streams the linear CKA between every pair of layers over the batches it already
reads; the joint knowledge file stores it, and reading it back refuses a malformed entry."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from tiny_models import QUIET, data, make_data, mlp, permuted
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec import KnowledgeFileError, StaticKnowledge, embed_models
from lightning_semvec.embedding._joint_pass import CKA_MAX_ROWS
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.knowledge.joint_space import (
    CKA_KEY,
    MODELS_KEY,
    JointCKA,
    cka_record,
    stored_cka,
)
from lightning_semvec.metrics import LinearCKA

LAYERS = ["1", "3", "4"]


def outputs(net: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """What layers 1 (the first ReLU), 3 (the second) and 4 (the logits) of an mlp give."""
    with torch.no_grad():
        return [net[:2](x), net[:4](x), net(x)]


def reference_cka(nets: list[torch.nn.Sequential], loader: DataLoader, max_rows: int) -> torch.Tensor:
    """LinearCKA over the loader's batches, each split as the joint pass splits it."""
    metric = LinearCKA(num_layers_a=3 * len(nets))
    for x, *_ in loader:
        layers = [out for net in nets for out in outputs(net, x)]
        pieces = -(-x.shape[0] // max_rows)
        for minibatch in zip(*(torch.tensor_split(layer, pieces) for layer in layers)):
            metric.update(list(minibatch))
    return metric.compute()


def test_the_stored_cka_is_linear_cka_over_the_same_batches():
    a = mlp(0)
    b, _ = permuted(a, seed=1, noise=0.02)
    c = mlp(2)
    loader = data(n=512)
    knowledge = embed_models({"a": a, "b": b, "c": c}, loader, LAYERS, dim=4, trainer=QUIET)
    cka = stored_cka(knowledge)
    assert isinstance(cka, JointCKA)
    assert cka.layers == knowledge.layer_names == [f"{m}/{n}" for m in "abc" for n in LAYERS]
    assert cka.minibatches == 4  # 4 batches of 128, every one used
    expected = reference_cka([a, b, c], loader, CKA_MAX_ROWS)
    torch.testing.assert_close(cka.matrix, expected, atol=1e-6, rtol=0)
    assert cka.matrix.dtype == torch.float64
    # A permuted copy's layers are its original's up to an orthogonal map: CKA 1; another seed's
    # are not.
    same = cka.block(["a/1", "a/3"], ["b/1", "b/3"]).diagonal()
    assert same.min() > 0.99
    assert cka.block(["a/3"], ["c/3"]).item() < same.min() - 0.05
    # Within one model, too: the first model's block is symmetric with a unit diagonal.
    within = cka.block(["a/1", "a/3", "a/4"], ["a/1", "a/3", "a/4"])
    torch.testing.assert_close(within.diagonal(), torch.ones(3, dtype=torch.float64))


class InPlaceConvNet(nn.Module):
    """conv1 (4 x 6 x 6) -> in-place ReLU -> conv2 (5 x 3 x 3) -> pooled -> fc (3 logits)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # changes conv1's output after its hook ran
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.relu(self.conv1(x))).mean(dim=(2, 3)))

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            first = self.conv1(x)
            second = self.conv2(torch.relu(first))
            return [first, second, self.fc(second.mean(dim=(2, 3)))]


@pytest.mark.parametrize("features", ["flattened", "readout"])
def test_conv_layers_are_compared_flattened_or_as_read(features):
    nets = [InPlaceConvNet(0), InPlaceConvNet(1)]
    loader = DataLoader(TensorDataset(make_data(96).tensors[0]), batch_size=32)
    knowledge = embed_models({"a": nets[0], "b": nets[1]}, loader, ["conv1", "conv2", "fc"],
                             dim=3, cka=features, trainer=QUIET)
    cka = stored_cka(knowledge)
    assert cka is not None and cka.features == features and cka.minibatches == 3
    metric, other = LinearCKA(num_layers_a=6), LinearCKA(num_layers_a=6)
    for (x,) in loader:
        outs = [out for net in nets for out in net.layers(x)]  # conv1 before the in-place ReLU
        flattened = [out.flatten(1) for out in outs]
        read = [out.mean(dim=(2, 3)) if out.ndim == 4 else out for out in outs]
        (metric if features == "flattened" else other).update(flattened)
        (other if features == "flattened" else metric).update(read)
    torch.testing.assert_close(cka.matrix, metric.compute(), atol=1e-6, rtol=0)
    # The two forms differ on conv layers (and agree on the logits, 2-D either way).
    assert (cka.matrix - other.compute())[:2].abs().max() > 0.01
    torch.testing.assert_close(cka.block(["a/fc"], ["b/fc"]), other.compute()[2:3, 5:6],
                               atol=1e-6, rtol=0)


def test_no_cka_when_asked_for_none_and_a_bad_choice_is_one_line():
    loader = DataLoader(TensorDataset(make_data(32).tensors[0]), batch_size=16)
    nets = {"a": InPlaceConvNet(0), "b": InPlaceConvNet(1)}
    knowledge = embed_models(nets, loader, ["conv1"], dim=3, cka=None, trainer=QUIET)
    assert CKA_KEY not in knowledge.extra and stored_cka(knowledge) is None
    with pytest.raises(SemvecValueError, match="cka must be one of 'flattened', 'readout' or None, "
                                               "got 'pooled'"):
        embed_models(nets, loader, ["conv1"], dim=3, cka="pooled", trainer=QUIET)  # type: ignore[arg-type]


def test_outputs_of_different_samples_are_refused_for_the_flattened_cka():
    loader = DataLoader(TensorDataset(make_data(32).tensors[0]), batch_size=16)
    nets = {"a": InPlaceConvNet(0), "b": InPlaceConvNet(1)}
    # Read by positions, b's conv1 folded to twice the images of half the height: the joint rows
    # agree (16 x 36 = 32 x 18 positions), the samples of the flattened outputs do not.
    options = {"b/conv1": {"select_output": lambda out: out.reshape(out.shape[0] * 2, 4, 3, 6)}}
    with pytest.raises(SemvecValueError, match=r"different numbers of samples for one batch .*cka='readout'"):
        embed_models(nets, loader, ["conv1"], dim=3, reduction="positions", trainer=QUIET,
                     layer_options=options)


def test_a_batch_of_more_rows_than_the_limit_is_split_into_minibatches():
    a, b = mlp(0), mlp(1)
    g = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(torch.randn(2 * CKA_MAX_ROWS + 100, 6, generator=g)),
                        batch_size=CKA_MAX_ROWS + 50)  # 562 rows, then 562: 2 x 2 minibatches
    knowledge = embed_models({"a": a, "b": b}, loader, LAYERS, dim=4, trainer=QUIET)
    cka = stored_cka(knowledge)
    assert cka is not None and cka.minibatches == 4
    torch.testing.assert_close(cka.matrix, reference_cka([a, b], loader, CKA_MAX_ROWS),
                               atol=1e-6, rtol=0)


def test_the_cka_round_trips_through_the_file(tmp_path):
    knowledge = embed_models({"a": mlp(0), "b": mlp(1)}, data(n=256), LAYERS, dim=4,
                             trainer=QUIET)
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "joint.semvec.safetensors"))
    assert loaded.extra[CKA_KEY] == knowledge.extra[CKA_KEY]
    before, after = stored_cka(knowledge), stored_cka(loaded)
    assert before is not None and after is not None
    assert after.layers == before.layers and after.minibatches == before.minibatches == 2
    assert torch.equal(after.matrix, before.matrix)


def test_batches_too_small_for_the_estimator_store_no_cka_and_say_so():
    loader = DataLoader(TensorDataset(torch.randn(12, 6)), batch_size=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        knowledge = embed_models({"a": mlp(0), "b": mlp(1)}, loader, LAYERS, dim=3,
                                 trainer=QUIET)
    assert CKA_KEY not in knowledge.extra and stored_cka(knowledge) is None
    assert any("no batch had 4 inputs or more (4 smaller ones), so no CKA" in str(w.message)
               for w in caught)


def joint(extra_cka: str | None) -> StaticKnowledge:
    extra = {MODELS_KEY: '["a", "b"]'}
    if extra_cka is not None:
        extra[CKA_KEY] = extra_cka
    return StaticKnowledge.from_vectors({"a/fc": torch.eye(3), "b/fc": torch.eye(3)}, extra=extra)


GOOD = {"layers": ["a/fc", "b/fc"], "cka": [[1.0, 0.5], [0.5, 1.0]], "minibatches": 3,
        "features": "readout"}


def test_a_file_without_cka_still_loads_and_a_good_entry_reads(tmp_path):
    older = joint(None)
    assert StaticKnowledge.load(older.save(tmp_path / "old.semvec.safetensors")) == older
    assert stored_cka(older) is None
    cka = stored_cka(joint(json.dumps({**GOOD, "cka": [[1.0, None], [None, None]]})))
    assert cka is not None and cka.matrix[0, 0] == 1.0 and cka.matrix[1].isnan().all()
    with pytest.raises(KeyError, match=r"No CKA for layers \['c/fc'\]"):
        cka.block(["c/fc"], ["a/fc"])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{not json", "is not JSON"),
        (json.dumps([1, 2]), "must be a JSON object of layers, cka, minibatches and features"),
        (json.dumps({**GOOD, "extra": 1}), "must be a JSON object of layers, cka, minibatches and"),
        (json.dumps({**GOOD, "features": "pooled"}),
         r"has features='pooled', not one of \['flattened', 'readout'\]"),
        (json.dumps({**GOOD, "layers": ["b/fc", "a/fc"]}),
         r"names the layers \['b/fc', 'a/fc'\], but the knowledge has \['a/fc', 'b/fc'\]"),
        (json.dumps({**GOOD, "minibatches": 0}), "has minibatches=0, not a positive integer"),
        (json.dumps({**GOOD, "minibatches": True}), "has minibatches=True"),
        (json.dumps({**GOOD, "cka": [[1.0, 0.5]]}), "must hold a 2 x 2 matrix .*got 1 rows"),
        (json.dumps({**GOOD, "cka": [[1.0, 0.5], [0.5]]}), "must hold a 2 x 2 matrix"),
        (json.dumps({**GOOD, "cka": "1, 0.5"}), "must hold a 2 x 2 matrix .*got str"),
        (json.dumps({**GOOD, "cka": [[1.0, "0.5"], ["0.5", 1.0]]}),
         "holds '0.5' where a CKA value"),
        (json.dumps({**GOOD, "cka": [[1.0, True], [True, 1.0]]}), "holds True where a CKA value"),
        ('{"layers":["a/fc","b/fc"],"cka":[[1.0,NaN],[NaN,1.0]],"minibatches":3,"features":"readout"}',
         "holds nan where a CKA value"),
        (json.dumps({**GOOD, "cka": [[1.0, 0.5], [0.4, 1.0]]}), "is not symmetric"),
        (json.dumps({**GOOD, "cka": [[1.0, None], [0.5, 1.0]]}), "is not symmetric"),
    ],
    ids=["not-json", "a-list", "unknown-key", "features", "layers", "no-minibatch", "bool-count", "rows",
         "row-length", "a-string", "string-values", "bool-values", "nan", "asymmetric",
         "null-on-one-side"],
)
def test_a_malformed_entry_is_one_clear_knowledge_file_error(tmp_path, entry, message):
    knowledge = joint(entry)
    # The file loads (extra is free-form), but the CKA read from it is refused, never guessed.
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "k.semvec.safetensors"))
    with pytest.raises(KnowledgeFileError, match=message) as caught:
        stored_cka(loaded)
    text = str(caught.value)
    assert text.startswith("The knowledge's 'joint/cka' entry ") and "\n" not in text
    assert text.endswith("embed the models again (embed_models, or semvec embed --compare).")


def test_cka_record_rounds_and_writes_null_for_nan():
    record = json.loads(cka_record(["a/x", "b/y"], torch.tensor(
        [[1.0, 0.1234567891], [0.1234567891, float("nan")]], dtype=torch.float64), 5))
    assert record == {"layers": ["a/x", "b/y"], "cka": [[1.0, 0.123457], [0.123457, None]],
                      "minibatches": 5, "features": "flattened"}
    with pytest.raises(ValueError, match=r"matrix must be \(2, 2\)"):
        cka_record(["a/x", "b/y"], torch.eye(3), 1)
    with pytest.raises(ValueError, match="features must be one of"):
        cka_record(["a/x", "b/y"], torch.eye(2), 1, "pooled")
