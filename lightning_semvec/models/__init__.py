"""Networks for the examples and benchmarks, a name registry, and a plain classifier module."""

from lightning_semvec.models.cifar_resnet import (
    BasicBlock,
    CifarResNet,
    resnet8x4,
    resnet20,
    resnet32x4,
    resnet56,
)
from lightning_semvec.models.classifier import ImageClassifier
from lightning_semvec.models.optimizers import cosine_schedule
from lightning_semvec.models.pooled_cnn import PooledCNN
from lightning_semvec.models.registry import available_models, build_model
from lightning_semvec.models.small_cnn import SmallCNN

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "ImageClassifier",
    "PooledCNN",
    "SmallCNN",
    "available_models",
    "build_model",
    "cosine_schedule",
    "resnet8x4",
    "resnet20",
    "resnet32x4",
    "resnet56",
]
