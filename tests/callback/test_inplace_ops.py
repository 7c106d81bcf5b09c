"""In-place ops after a hooked layer must not change what the hooks kept: a network with
``inplace=True`` / ``+=`` and its out-of-place twin give the same vectors, statistics and
distillation loss."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tiny_models import TinyConvNet, trainer_kwargs
from torch import Tensor, nn

from lightning_semvec import (
    AnalysisOptions,
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
)


class Block(nn.Module):
    """A ResNet basic block in miniature: ``out += identity`` on ``bn2``'s output."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.inplace:
            out += x
        else:
            out = out + x
        return self.relu(out)


class InplaceNet(TinyConvNet):
    """Stem, one block, a VGG-like classifier (``Linear`` then ``ReLU(inplace)``), and a
    ``(B, T, N)`` token layer read with ``reduction="positions"`` then changed in place."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = Block(inplace)
        self.tokens = nn.Linear(4, 5)
        self.fc = nn.Linear(5, 8)
        self.act = nn.ReLU(inplace=inplace)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block(self.stem(x))  # (B, 4, 6, 6)
        t = self.tokens(h.flatten(2).transpose(1, 2))  # (B, 36, 5)
        if self.inplace:
            t.mul_(2.0)
        else:
            t = t * 2.0
        return self.head(self.act(self.fc(t.mean(dim=1))))


LAYERS = ["block.bn1", "block.bn2", "tokens", "fc"]


def train(inplace: bool) -> tuple[SemanticVectorCallback, nn.Module]:
    semvec = SemanticVectorCallback(
        layers=LAYERS, dim=3, lr=0.05, layer_options={"tokens": {"reduction": "positions", "neuron_dim": -1}},
        analysis=AnalysisOptions(projector=False, figures=False, num_classes=3),
    )
    pl.seed_everything(0, verbose=False)
    model = InplaceNet(inplace)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=2, limit_val_batches=None))
    trainer.fit(model)
    return semvec, model


def test_in_place_ops_after_a_hooked_layer_change_nothing_the_callback_keeps():
    hooked, hooked_model = train(inplace=True)
    twin, twin_model = train(inplace=False)
    for (name, a), b in zip(hooked_model.state_dict().items(), twin_model.state_dict().values()):
        assert torch.equal(a, b), name  # the model trains the same either way
    for name in LAYERS:
        assert torch.equal(hooked.semantic_vectors[name], twin.semantic_vectors[name]), name
        for key, value in twin.neuron_statistics[name].items():
            assert torch.equal(hooked.neuron_statistics[name][key], value), (name, key)


def test_a_static_student_paired_at_a_layer_changed_in_place_gets_the_loss_of_its_twin():
    knowledge = StaticKnowledge.from_vectors({"teacher.bn2": torch.randn(4, 3)})
    losses = []
    for inplace in (True, False):
        torch.manual_seed(0)
        student = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), Block(inplace), nn.AdaptiveAvgPool2d(1),
                                nn.Flatten(), nn.Linear(4, 3))
        module = StaticDistillationModule(student, knowledge, layer_map={"1.bn2": "teacher.bn2"},
                                          num_classes=3, weight=1.0)
        x = torch.randn(8, 1, 6, 6)
        with module.capturing() as captured:
            logits = module(x)
            terms = module.distillation_losses(x, torch.zeros(8, dtype=torch.long), logits, captured)
        (term,) = terms.values()
        term.loss.backward()
        losses.append((term.loss.detach(), student[1].conv2.weight.grad.clone()))
    assert torch.equal(losses[0][0], losses[1][0])
    assert torch.equal(losses[0][1], losses[1][1])  # and the gradient reaches the same weights
