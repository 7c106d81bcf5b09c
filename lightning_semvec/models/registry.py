"""Build a network by name: small and pooled CNNs, CIFAR ResNets and torchvision ResNets for 32x32 images."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from lightning_semvec._utils.checks import check_choice, check_int
from lightning_semvec.models.cifar_resnet import (
    resnet8x4,
    resnet20,
    resnet32x4,
    resnet56,
)
from lightning_semvec.models.pooled_cnn import PooledCNN
from lightning_semvec.models.small_cnn import SmallCNN


def _torchvision_resnet(arch: str) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, in_channels: int) -> nn.Module:
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        # Small-image stem: a 3x3 convolution of stride 1 and no max pooling, so that 32x32
        # inputs keep a 4x4 map in layer4 instead of 1x1.
        net.conv1 = nn.Conv2d(in_channels, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        # torchvision's ReLUs work in place, which would overwrite the outputs of hooked
        # batch-norm layers; out of place they leave them intact.
        for module in net.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False
        return net

    build.__name__ = arch
    return build


_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": lambda num_classes, in_channels: SmallCNN(in_channels, num_classes),
    "small_cnn_teacher": lambda num_classes, in_channels: SmallCNN(
        in_channels, num_classes, width=32, hidden=128
    ),
    "small_cnn_student": lambda num_classes, in_channels: SmallCNN(
        in_channels, num_classes, width=8, hidden=32
    ),
    "pooled_cnn": lambda num_classes, in_channels: PooledCNN(in_channels, num_classes),
    "pooled_cnn_teacher": lambda num_classes, in_channels: PooledCNN(
        in_channels, num_classes, width=32
    ),
    "pooled_cnn_student": lambda num_classes, in_channels: PooledCNN(
        in_channels, num_classes, width=8, hidden=32
    ),
    "resnet8x4": lambda num_classes, in_channels: resnet8x4(num_classes, in_channels),
    "resnet32x4": lambda num_classes, in_channels: resnet32x4(num_classes, in_channels),
    "resnet20": lambda num_classes, in_channels: resnet20(num_classes, in_channels),
    "resnet56": lambda num_classes, in_channels: resnet56(num_classes, in_channels),
    "resnet18": _torchvision_resnet("resnet18"),
    "resnet50": _torchvision_resnet("resnet50"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`.

    Example:
        >>> available_models()[:3]
        ['small_cnn', 'small_cnn_teacher', 'small_cnn_student']
    """
    return list(_BUILDERS)


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised network (no pretrained weights) chosen by name.

    Names:
        - ``small_cnn`` / ``small_cnn_teacher`` / ``small_cnn_student``:
          :class:`~lightning_semvec.models.SmallCNN` with ``(width, hidden)`` of
          ``(16, 64)`` / ``(32, 128)`` / ``(8, 32)``; modules ``features.*``, ``classifier.*``
          (``classifier.3`` gives the logits).
        - ``pooled_cnn`` / ``pooled_cnn_teacher`` / ``pooled_cnn_student``:
          :class:`~lightning_semvec.models.PooledCNN` with ``(width, hidden)`` of
          ``(16, 64)`` / ``(32, 64)`` / ``(8, 32)``, three pooled stages for 32x32 images such as the glyphs; the same
          module names (``classifier.3`` gives the logits).
        - ``resnet8x4``, ``resnet32x4``, ``resnet20``, ``resnet56``: CIFAR ResNets
          (:mod:`lightning_semvec.models.cifar_resnet`); modules ``conv1``, ``bn1``,
          ``layer1``..``layer3``, ``avgpool``, ``fc``.
        - ``resnet18``, ``resnet50``: torchvision's ResNets with a 3x3 stride-1 stem and no
          max pooling, for 32x32 images; modules ``conv1``, ``bn1``, ``layer1``..``layer4``,
          ``avgpool``, ``fc`` (``maxpool`` is an ``Identity``; ReLUs are not in place).

    Args:
        name: one of :func:`available_models`.
        num_classes: number of logits.
        in_channels: channels of the input images (1 for MNIST / digits, 3 for CIFAR).

    Returns:
        A module mapping ``(B, in_channels, H, W)`` images to ``(B, num_classes)`` logits.

    Raises:
        ValueError: for an unknown name (the message lists the known ones) or a
            non-positive ``num_classes`` / ``in_channels``.

    Example:
        >>> import torch
        >>> net = build_model("resnet20", num_classes=10)
        >>> tuple(net(torch.zeros(2, 3, 32, 32)).shape)
        (2, 10)
    """
    check_choice("model name", name, _BUILDERS)
    check_int("num_classes", num_classes, 1)
    check_int("in_channels", in_channels, 1)
    return _BUILDERS[name](num_classes, in_channels)
