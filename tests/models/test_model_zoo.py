"""The model zoo (issue 11, item 9): real architectures with every conv, linear and norm layer
hooked through glob patterns, trained for a few steps by a real Trainer on the CPU.

For each model: no error; the model's weights are bit-identical with and without the
callback; and the vectors equal those of the model's out-of-place twin (every
``inplace=True`` turned off, every residual ``+=`` turned into ``+``), so the in-place ops
after a hooked layer change nothing the callback keeps. Static distillation with a
torchvision student the same way: its loss and gradients equal those of its twin.

Every layer is read with ``reduction="positions"``: each position is a sample, so a layer
whose output is ``(B, N)``, ``(B, T, N)``, ``(B, C, 1, 1)`` or channels-last is read as a
view of the output, the case where an in-place op could reach what the hook kept (a mean
over positions copies anyway). ``test_the_twins_are_out_of_place`` records which hooked
layers each original model writes to in place after they returned, and checks that the
twins write to none, so a twin comparison cannot pass because both models are the same.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torchvision.models as tvm
from tiny_models import trainer_kwargs
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import convnext, efficientnet, mobilenetv3, resnet

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
)

NUM_CLASSES = 3
HOOKED_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm,
                nn.LayerNorm, nn.GroupNorm, nn.RNNBase)


# ---------------------------------------------------------------- small sequence models
class LSTMNet(nn.Module):
    """An LSTM read as ``(B, T, N)``; its pooled, normalised output goes through
    ``ReLU(inplace=True)``. (An in-place op on the LSTM's own output fails autograd: the CPU
    LSTM keeps its output for the backward.)"""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.act = nn.ReLU(inplace=True)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(self.act(self.norm(out.mean(dim=1))))


class EncoderNet(nn.Module):
    """``nn.TransformerEncoder`` whose feed-forward activation is ``ReLU(inplace=True)``
    (on ``linear1``'s output)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1,
                                           activation=nn.ReLU(inplace=True), batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def tiny_vit() -> nn.Module:
    return tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
                                 hidden_dim=16, mlp_dim=32, num_classes=NUM_CLASSES)


def vgg_layers(net: nn.Module) -> list[str]:
    """VGG's ``features`` mix convs, norms, ReLUs and pools under plain indices: its convs and
    norms are named from their types; its classifier's linears by a pattern."""
    return [f"net.{name}" for name, module in net.named_modules()
            if name.startswith("features.") and isinstance(module, HOOKED_TYPES)
            ] + ["net.classifier.[036]"]


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    layers: list[str] | Callable[[nn.Module], list[str]]
    inputs: tuple[int, ...] = (4, 3, 32, 32)
    layer_options: dict[str, dict[str, Any]] = field(default_factory=dict)


SEQUENCE = {"neuron_dim": -1}
CASES = {
    "resnet18": Case(
        lambda: tvm.resnet18(weights=None, num_classes=NUM_CLASSES),
        ["net.**.conv*", "net.**.bn*", "net.**.downsample.*", "net.fc"]),
    "vgg11_bn": Case(lambda: tvm.vgg11_bn(weights=None, num_classes=NUM_CLASSES), vgg_layers),
    "mobilenet_v3_small": Case(
        lambda: tvm.mobilenet_v3_small(weights=None, num_classes=NUM_CLASSES),
        ["net.features.*.[01]", "net.features.*.block.*.[01]", "net.features.*.block.*.fc?",
         "net.classifier.[03]"]),
    "efficientnet_b0": Case(
        lambda: tvm.efficientnet_b0(weights=None, num_classes=NUM_CLASSES),
        ["net.features.[08].[01]", "net.features.*.*.block.*.[01]",
         "net.features.*.*.block.*.fc?", "net.classifier.1"]),
    "convnext_tiny": Case(
        lambda: tvm.convnext_tiny(weights=None, num_classes=NUM_CLASSES),
        ["net.features.0.[01]", "net.features.[246].[01]", "net.features.*.*.block.[0235]",
         "net.classifier.[02]"],
        # A CNBlock's norm and linears see (B, H, W, C): channels last.
        layer_options={"net.features.*.*.block.[235]": SEQUENCE}),
    "vit": Case(
        tiny_vit, ["net.conv_proj", "net.encoder.**.ln*", "net.encoder.**.mlp.[03]", "net.heads.*"],
        layer_options={"net.encoder.**": SEQUENCE}),
    "lstm": Case(
        LSTMNet, ["net.embed", "net.lstm", "net.norm", "net.head"], inputs=(4, 6, 5),
        layer_options={"net.embed": SEQUENCE, "net.lstm": {"select_output": 0, **SEQUENCE}}),
    "transformer_encoder": Case(
        EncoderNet, ["net.embed", "net.encoder.layers.*.linear?", "net.encoder.layers.*.norm?",
                     "net.head"],
        inputs=(4, 6, 5), layer_options={"net.embed": SEQUENCE, "net.encoder.**": SEQUENCE}),
}


# ---------------------------------------------------------------- the out-of-place twin
def _basic_block(self: resnet.BasicBlock, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


def _bottleneck(self: resnet.Bottleneck, x: Tensor) -> Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


def _inverted_residual(self: mobilenetv3.InvertedResidual, x: Tensor) -> Tensor:
    result = self.block(x)
    return result + x if self.use_res_connect else result


def _mbconv(self: efficientnet.MBConv, x: Tensor) -> Tensor:
    result = self.block(x)
    return self.stochastic_depth(result) + x if self.use_res_connect else result


def _cnblock(self: convnext.CNBlock, x: Tensor) -> Tensor:
    return self.stochastic_depth(self.layer_scale * self.block(x)) + x


OUT_OF_PLACE_FORWARDS: dict[type, Callable[..., Tensor]] = {
    resnet.BasicBlock: _basic_block,
    resnet.Bottleneck: _bottleneck,
    mobilenetv3.InvertedResidual: _inverted_residual,
    efficientnet.MBConv: _mbconv,
    efficientnet.FusedMBConv: _mbconv,
    convnext.CNBlock: _cnblock,
}


def out_of_place_twin(net: nn.Module) -> nn.Module:
    """A copy of ``net`` computing the same values with no in-place op on a module's output:
    ``inplace=False`` everywhere, and torchvision's ``result += input`` blocks as ``+``."""
    twin = copy.deepcopy(net)
    for module in twin.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
        forward = OUT_OF_PLACE_FORWARDS.get(type(module))
        if forward is not None:
            module.forward = types.MethodType(forward, module)
    return twin


class InPlaceWrites(TorchDispatchMode):
    """Records which of ``names`` have their output written to in place after they returned."""

    def __init__(self, net: nn.Module, names: set[str]) -> None:
        super().__init__()
        self.written: set[str] = set()
        self._outputs: dict[int, str] = {}
        self._kept: list[Tensor] = []  # alive, so no storage is reused during the forward
        self._handles = [module.register_forward_hook(self._hook(name))
                         for name, module in net.named_modules() if name in names]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            for tensor in output if isinstance(output, tuple) else (output,):
                if isinstance(tensor, Tensor):
                    self._kept.append(tensor)
                    self._outputs.setdefault(tensor.untyped_storage().data_ptr(), name)
        return hook

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                if isinstance(value, Tensor):
                    name = self._outputs.get(value.untyped_storage().data_ptr())
                    if name is not None:
                        self.written.add(name)
        return func(*args, **kwargs)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def written_in_place(net: nn.Module, x: Tensor, names: set[str]) -> set[str]:
    """The layers of ``names`` (relative to ``net``) whose outputs a training-mode forward of
    ``net`` rewrites in place."""
    recorder = InPlaceWrites(net, names)
    try:
        with torch.no_grad(), recorder:
            net.train()(x)
    finally:
        recorder.remove()
    return recorder.written


# ---------------------------------------------------------------- training
class ZooModule(pl.LightningModule):
    def __init__(self, net: nn.Module, data: TensorDataset) -> None:
        super().__init__()
        self.net, self.data = net, data

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=2, shuffle=False)


def make_data(shape: tuple[int, ...]) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(*shape, generator=g),
                         torch.randint(0, NUM_CLASSES, (shape[0],), generator=g))


def fit(net: nn.Module, data: TensorDataset, semvec: SemanticVectorCallback | None) -> ZooModule:
    module = ZooModule(net, data)
    pl.seed_everything(2, verbose=False)  # dropout and stochastic depth draw the same masks
    trainer = pl.Trainer(max_steps=2, callbacks=[semvec] if semvec else [], **trainer_kwargs())
    trainer.fit(module)
    assert trainer.global_step == 2
    return module


def hooked_by_type(module: nn.Module) -> set[str]:
    """Every conv, linear, norm and recurrent layer of ``module``, except the ``out_proj`` of an
    ``nn.MultiheadAttention``, which it never calls (it uses the weights functionally)."""
    inside_attention = {f"{name}.{child}" for name, m in module.named_modules()
                        if isinstance(m, nn.MultiheadAttention) for child, _ in m.named_children()}
    return {name for name, m in module.named_modules()
            if isinstance(m, HOOKED_TYPES) and name not in inside_attention}


def callback(case: Case, net: nn.Module) -> SemanticVectorCallback:
    layers = case.layers(net) if callable(case.layers) else case.layers
    return SemanticVectorCallback(layers=layers, dim=4, reduction="positions",
                                  layer_options=case.layer_options, analysis=None)


def assert_same_tensors(a: dict[str, Tensor], b: dict[str, Tensor], what: str) -> None:
    assert list(a) == list(b), what
    for name in a:
        assert torch.equal(a[name], b[name]), f"{what}: {name} differs"


@pytest.mark.parametrize("name", list(CASES))
def test_a_zoo_model_trains_the_same_and_gets_the_vectors_of_its_out_of_place_twin(name):
    case = CASES[name]
    torch.manual_seed(0)
    net = case.build()
    data = make_data(case.inputs)

    hooked = callback(case, net)
    with_callback = fit(copy.deepcopy(net), data, hooked)
    layers = set(hooked.layer_names)
    assert layers == {f"net.{n}" for n in hooked_by_type(net)}  # every conv, linear, norm
    assert set(hooked.semantic_vectors) == layers  # every layer was read and updated
    assert hooked.training_steps == 2

    without = fit(copy.deepcopy(net), data, None)
    assert_same_tensors(with_callback.state_dict(), without.state_dict(),
                        "weights with and without the callback")

    twin = callback(case, net)
    twin_module = fit(out_of_place_twin(net), data, twin)
    assert_same_tensors(twin_module.state_dict(), without.state_dict(), "weights of the twin")
    assert_same_tensors(hooked.semantic_vectors, twin.semantic_vectors, "vectors of the twin")


# Which hooked layers each original model rewrites in place after they returned (ReLU,
# Hardswish, SiLU with inplace=True, residual `+=`): every twin comparison above covers these.
IN_PLACE = {
    "resnet18": "every bn1 (ReLU(inplace)) and bn2 (`out += identity`, then ReLU(inplace))",
    "vgg11_bn": "every BatchNorm2d and the two 4096-wide Linears (ReLU(inplace))",
    "mobilenet_v3_small": "norms before Hardswish/ReLU(inplace), projections (`+=`), classifier.0",
    "efficientnet_b0": "norms before SiLU(inplace), every squeeze-excitation fc1 (SiLU(inplace))",
    "convnext_tiny": None,  # `result += input` adds to a product, not to a layer's output
    "vit": None,
    "lstm": "norm (ReLU(inplace) on its output)",
    "transformer_encoder": "every linear1 (the feed-forward ReLU(inplace))",
}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0",
                                  "convnext_tiny", "vit", "lstm", "transformer_encoder"])
def test_the_twins_are_out_of_place(name):
    """The premise of the twin comparisons: the original writes into hooked layers' outputs
    (where the table says so), its twin into none. (vgg11_bn is left out for its size; its
    in-place ReLUs are plain modules that ``inplace=False`` turns off.)"""
    case = CASES[name]
    torch.manual_seed(0)
    net = case.build()
    x = make_data(case.inputs).tensors[0][:2]
    layers = hooked_by_type(net)
    assert written_in_place(out_of_place_twin(net), x, layers) == set()
    original = written_in_place(net, x, layers)
    assert bool(original) == (IN_PLACE[name] is not None), sorted(original)
    if name == "resnet18":
        blocks = {f"layer{i}.{j}" for i in range(1, 5) for j in range(2)}
        assert original == {"bn1"} | {f"{b}.bn{k}" for b in blocks for k in (1, 2)}


# ---------------------------------------------------------------- static distillation
@pytest.mark.parametrize(
    ("reduction", "channels_last"),
    [("mean", False), ("positions", True)],
    ids=["mean", "positions-channels-last"],
)
def test_a_torchvision_student_gets_the_distillation_loss_and_gradients_of_its_twin(
    reduction, channels_last
):
    """A ResNet-18 student paired at ``layer1.0.bn2`` (then ``out += identity``, then
    ``ReLU(inplace=True)``). Read by positions in channels-last memory, the readout is a view
    of the output; a mean copies it."""
    vectors = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    knowledge = StaticKnowledge.from_vectors({"t": vectors}, reduction=reduction)
    torch.manual_seed(0)
    student = tvm.resnet18(weights=None, num_classes=NUM_CLASSES)
    x, y = make_data((4, 3, 32, 32)).tensors
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    results = []
    for net in (student, out_of_place_twin(student)):
        module = StaticDistillationModule(copy.deepcopy(net), knowledge,
                                          layer_map={"layer1.0.bn2": "t"},
                                          num_classes=NUM_CLASSES, weight=1.0)
        with module.capturing() as captured:
            terms = module.distillation_losses(x, y, module(x), captured)
        loss = terms["static_loss/layer1.0.bn2"].loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
        assert "student.layer1.0.conv2.weight" in grads
        # and a real Trainer trains both to the same weights (the loader's batches are
        # contiguous again: the channels-last readout is checked by the step above)
        pl.seed_everything(2, verbose=False)
        module.zero_grad()
        pl.Trainer(max_steps=2, **trainer_kwargs()).fit(
            module, DataLoader(TensorDataset(x, y), batch_size=2, shuffle=False))
        results.append((loss.detach(), grads, module.state_dict()))
    (loss, grads, weights), (twin_loss, twin_grads, twin_weights) = results
    assert torch.equal(loss, twin_loss)
    assert_same_tensors(grads, twin_grads, "gradients of the twin")
    assert_same_tensors(weights, twin_weights, "weights of the twin")
