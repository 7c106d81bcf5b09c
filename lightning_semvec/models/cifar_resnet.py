"""CIFAR-style ResNets of the usual knowledge-distillation benchmark (resnet20/56, resnet8x4/32x4).

Three stages of basic blocks on a 3x3 stem, as in the CIFAR ResNets of He et al. (2016) and
the shapes used by the CRD distillation benchmark (Tian et al., 2020): a network of depth
``d`` has ``(d - 2) / 6`` blocks per stage; ``filters = [stem, stage1, stage2, stage3]``.

========== ===== ======================= ============
name       depth filters                 blocks/stage
========== ===== ======================= ============
resnet20   20    16, 16, 32, 64          3
resnet56   56    16, 16, 32, 64          9
resnet8x4  8     32, 64, 128, 256        1
resnet32x4 32    32, 64, 128, 256        5
========== ===== ======================= ============
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_semvec._utils.checks import check_int, is_int_at_least
from lightning_semvec.errors import SemvecValueError


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection; ReLU after the sum.

    The shortcut is the identity, or a 1x1 conv + BN (``downsample``) when the stride or
    the channel count changes.

    Shapes:
        input ``(B, in_planes, H, W)``, output ``(B, planes, H / stride, W / stride)``.

    Example:
        >>> import torch
        >>> block = BasicBlock(16, 32, stride=2)
        >>> tuple(block(torch.zeros(2, 16, 8, 8)).shape)
        (2, 32, 4, 4)
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """A three-stage CIFAR ResNet of basic blocks.

    Submodules (names to hook): ``conv1``, ``bn1``, ``relu`` (stem, full resolution),
    ``layer1`` (stride 1), ``layer2`` (stride 2), ``layer3`` (stride 2), each a
    ``Sequential`` of :class:`BasicBlock` named ``layerK.i``; ``avgpool`` (global average,
    adaptive so any input size works) and ``fc`` (the logits). There is no ``layer4``.

    Args:
        depth: total depth, ``6 n + 2`` for ``n`` blocks per stage (8, 20, 32, 56, ...).
        filters: four channel counts ``[stem, layer1, layer2, layer3]``.
        num_classes: number of logits.
        in_channels: channels of the input images.

    Shapes:
        input ``(B, in_channels, H, W)`` (32x32 for CIFAR), output ``(B, num_classes)``.
        ``layer3`` outputs ``(B, filters[3], H / 4, W / 4)``.

    Example:
        >>> import torch
        >>> net = CifarResNet(depth=8, filters=[8, 8, 16, 32], num_classes=10)
        >>> tuple(net(torch.zeros(2, 3, 16, 16)).shape)
        (2, 10)
        >>> [name for name, _ in net.named_children()]
        ['conv1', 'bn1', 'relu', 'layer1', 'layer2', 'layer3', 'avgpool', 'fc']
    """

    def __init__(
        self,
        depth: int,
        filters: Sequence[int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not is_int_at_least(depth, 8) or (depth - 2) % 6 != 0:
            raise SemvecValueError(
                "CifarResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110, ...); "
                f"got {depth!r}."
            )
        filters = list(filters)
        if len(filters) != 4 or not all(is_int_at_least(f, 1) for f in filters):
            raise SemvecValueError(
                "filters must be four positive channel counts [stem, layer1, layer2, layer3]; "
                f"got {filters!r}."
            )
        check_int("num_classes", num_classes, 1)
        check_int("in_channels", in_channels, 1)
        blocks = (depth - 2) // 6
        self.depth = depth
        self.filters = filters
        self.conv1 = nn.Conv2d(in_channels, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU()  # not in place: hooks on bn1 may keep its output
        self.layer1 = self._stage(filters[0], filters[1], blocks, stride=1)
        self.layer2 = self._stage(filters[1], filters[2], blocks, stride=2)
        self.layer3 = self._stage(filters[2], filters[3], blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(filters[3] * BasicBlock.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_channels, H, W)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


_X4_FILTERS = (32, 64, 128, 256)
_PLAIN_FILTERS = (16, 16, 32, 64)


def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8x4: depth 8, filters [32, 64, 128, 256] (about 1.2 M parameters at 100 classes).

    Example:
        >>> sum(p.numel() for p in resnet8x4(num_classes=100).parameters()) > 1_000_000
        True
    """
    return CifarResNet(8, _X4_FILTERS, num_classes, in_channels)


def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32x4: depth 32, filters [32, 64, 128, 256] (about 7.4 M parameters).

    Example:
        >>> len(resnet32x4(num_classes=10).layer3)
        5
    """
    return CifarResNet(32, _X4_FILTERS, num_classes, in_channels)


def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-20: depth 20, filters [16, 16, 32, 64] (about 0.28 M parameters).

    Example:
        >>> len(resnet20(num_classes=10).layer1)
        3
    """
    return CifarResNet(20, _PLAIN_FILTERS, num_classes, in_channels)


def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-56: depth 56, filters [16, 16, 32, 64] (about 0.86 M parameters).

    Example:
        >>> len(resnet56(num_classes=10).layer2)
        9
    """
    return CifarResNet(56, _PLAIN_FILTERS, num_classes, in_channels)
