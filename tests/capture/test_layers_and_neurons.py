import pytest
import torch
from torch import nn

from lightning_semvec import NeuronReadout, SemanticVectorCallback, resolve_layers
from lightning_semvec.capture.layers import matches_pattern
from lightning_semvec.capture.readout import layer_readouts
from lightning_semvec.errors import SemvecTypeError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 1)))
        self.layer1 = nn.Sequential(nn.Module(), nn.Module())
        self.layer1[0].conv2 = nn.Conv2d(2, 2, 1)
        self.layer1[1].conv2 = nn.Conv2d(2, 2, 1)
        self.layer2 = nn.Sequential(nn.Module())
        self.layer2[0].conv2 = nn.Conv2d(2, 2, 1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2, 3), nn.Linear(3, 3))


def test_globs_stay_in_one_segment_and_keep_model_order():
    net = Net()
    assert list(resolve_layers(net, "features.*")) == ["features.0", "features.1", "features.2"]
    assert list(resolve_layers(net, ["layer?.*.conv2"])) == [
        "layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2"
    ]
    assert list(resolve_layers(net, ["classifier.2", "features.**"]))[-1] == "classifier.2"
    assert "features.2.0" in resolve_layers(net, "features.**")
    assert matches_pattern("a.**", "a.b.c") and not matches_pattern("a.*", "a.b.c")


def test_module_objects_and_duplicates():
    net = Net()
    layers = resolve_layers(net, [net.classifier[1], "classifier.1"])
    assert list(layers) == ["classifier.1"] and layers["classifier.1"] is net.classifier[1]


def test_no_match_names_closest_modules():
    with pytest.raises(ValueError, match="classifier.2"):
        resolve_layers(Net(), "clasifier.2")
    with pytest.raises(ValueError, match="matches no module"):
        resolve_layers(Net(), "decoder.*")


def test_empty_foreign_and_wrong_type_specs():
    with pytest.raises(ValueError, match="No layers given"):
        resolve_layers(Net(), [])
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layers(Net(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="module name, a glob pattern or an nn.Module"):
        resolve_layers(Net(), [3])
    # Not a spec nor a list of them: one clear error, not list()'s bare TypeError, in every
    # entry point that takes layers.
    for layers in (None, 3):
        with pytest.raises(SemvecTypeError, match="layers must be a module name, a glob pattern"):
            resolve_layers(Net(), layers)
        with pytest.raises(SemvecTypeError, match="layers must be a module name, a glob pattern"):
            SemanticVectorCallback(layers=layers)


@pytest.mark.parametrize(
    "shape, readout, expected",
    [
        ((5, 7), NeuronReadout(), (5, 7)),
        ((5, 3, 4, 4), NeuronReadout(), (5, 3)),
        ((5, 3, 4, 4), NeuronReadout(reduction="positions"), (80, 3)),
        ((5, 3, 2, 2, 2), NeuronReadout(), (5, 3)),
        ((5, 9, 6), NeuronReadout(neuron_dim=-1), (5, 6)),
        ((5, 9, 6), NeuronReadout(neuron_dim=-1, reduction="positions"), (45, 6)),
    ],
)
def test_readout_shapes(shape, readout, expected):
    out = readout.read(torch.randn(shape).to(torch.bfloat16))
    assert tuple(out.shape) == expected and out.dtype == torch.float32


def test_positions_keep_each_neuron_in_its_column():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    out = NeuronReadout(reduction="positions").read(x)
    for c in range(3):
        assert set(out[:, c].tolist()) == set(x[:, c].flatten().tolist())


def test_non_tensor_output_explains_select_output():
    with pytest.raises(TypeError, match="select_output"):
        NeuronReadout().read((torch.randn(2, 3), torch.randn(2, 3)), "lstm")
    assert NeuronReadout(select_output=1).read((torch.randn(2, 3), torch.randn(2, 4))).shape == (2, 4)
    assert NeuronReadout(select_output="h").read({"h": torch.randn(2, 5)}).shape == (2, 5)
    assert NeuronReadout(select_output=lambda o: o[0]).read([torch.randn(2, 6)]).shape == (2, 6)
    with pytest.raises(ValueError, match="could not pick"):
        NeuronReadout(select_output="missing").read({"h": torch.randn(2, 5)}, "enc")


def test_bad_readout_options():
    with pytest.raises(ValueError, match="Unknown reduction"):
        NeuronReadout(reduction="max")
    with pytest.raises(ValueError, match="batch axis"):
        NeuronReadout(neuron_dim=0)
    with pytest.raises(ValueError, match="expected"):
        NeuronReadout().read(torch.randn(4))


def test_an_rnns_tuple_gets_an_example_that_reads_its_neurons_and_names_the_batch_axis():
    # Before: the example left out neuron_dim=-1, which then took the time steps as neurons.
    lstm = torch.nn.LSTM(4, 6)  # batch_first=False: (T, B, N)
    output = lstm(torch.randn(5, 2, 4))
    with pytest.raises(TypeError) as caught:
        NeuronReadout().read(output, "lstm")
    message = str(caught.value)
    assert "layer_options={'lstm': {'select_output': 0, 'neuron_dim': -1}}" in message
    assert "sequence of shape (5, 2, 6)" in message and "batch_first=True" in message
    # The example as given, on an LSTM built as the message says: (B*T, N) rows of 6 neurons.
    batch_first = torch.nn.LSTM(4, 6, batch_first=True)(torch.randn(2, 5, 4))
    read = NeuronReadout(select_output=0, neuron_dim=-1, reduction="positions").read(batch_first)
    assert read.shape == (10, 6)
    # A tuple of flat tensors keeps the plain example.
    with pytest.raises(TypeError, match=r"\{'fc': \{'select_output': 0\}\}\.$"):
        NeuronReadout().read((torch.randn(2, 3), torch.randn(2, 4)), "fc")


@pytest.mark.parametrize(
    ("module", "options", "match"),
    [
        (torch.nn.LSTM(4, 6), {"select_output": 0, "neuron_dim": -1},
         r"'rnn' \(nn.LSTM\) has batch_first=False, so its output is \(T, B, N\).*batch_first=True"),
        (torch.nn.GRU(4, 6), {"select_output": 0, "neuron_dim": -1, "reduction": "positions"},
         r"'rnn' \(nn.GRU\) has batch_first=False"),
        (torch.nn.LSTM(4, 6, batch_first=True), {"select_output": 0},
         r"'rnn' \(nn.LSTM\) has its neurons on the last axis.*neuron_dim=1.*time steps as neurons"),
    ],
    ids=["lstm default", "gru positions", "neuron_dim left out"],
)
def test_a_recurrent_layer_read_so_that_time_steps_pass_for_samples_or_neurons_is_refused(
    module, options, match
):
    # Before: an nn.LSTM with batch_first=False read with neuron_dim=-1 gave (T, N) per step:
    # the time steps became the samples, without a word.
    with pytest.raises(ValueError, match=match):
        layer_readouts({"rnn": module}, NeuronReadout(), {"rnn": options})
    fine = layer_readouts({"rnn": torch.nn.LSTM(4, 6, batch_first=True)}, NeuronReadout(),
                          {"rnn": {"select_output": 0, "neuron_dim": -1}})
    assert fine["rnn"].neuron_dim == -1


def test_the_callback_refuses_a_default_lstm_before_training():
    import lightning.pytorch as pl
    from tiny_models import TinyConvNet, trainer_kwargs

    class WithLSTM(TinyConvNet):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(6, 4)

        def forward(self, x):
            steps = self.features(x).flatten(2).permute(2, 0, 1)  # (T, B, 6)
            return super().forward(x) + 0 * self.rnn(steps)[0].sum()

    model = WithLSTM()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    semvec = SemanticVectorCallback(layers=["rnn"], dim=3, layer_options={"rnn": {"select_output": 0, "neuron_dim": -1}})
    with pytest.raises(ValueError, match="batch_first=False"):
        pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1)).fit(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert semvec.vectors.layer_names == []
