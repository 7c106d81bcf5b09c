"""A two-convolution network for small images (8x8 digits to 32x32 CIFAR)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, a 2x2 adaptive average pool and a two-layer classifier head.

    Works on any input size of at least 1x1 (the pool always gives 2x2). Module names,
    for hooking layers by name (prefix them with ``net.`` inside
    :class:`~lightning_semvec.models.ImageClassifier`):

    - ``features.0``: ``Conv2d(in_channels, width, 3, padding=1)``, out ``(B, width, H, W)``
    - ``features.1``: ``ReLU``
    - ``features.2``: ``Conv2d(width, 2*width, 3, padding=1)``, out ``(B, 2*width, H, W)``
    - ``features.3``: ``ReLU``
    - ``features.4``: ``AdaptiveAvgPool2d(2)``, out ``(B, 2*width, 2, 2)``
    - ``classifier.0``: ``Flatten``, out ``(B, 8*width)``
    - ``classifier.1``: ``Linear(8*width, hidden)``, out ``(B, hidden)``
    - ``classifier.2``: ``ReLU``
    - ``classifier.3``: ``Linear(hidden, num_classes)``, the logits ``(B, num_classes)``

    A typical teacher is ``SmallCNN(width=32, hidden=128)``, a student
    ``SmallCNN(width=8, hidden=32)``.

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        width: channels of the first convolution (the second has ``2 * width``).
        hidden: units of the hidden fully connected layer.

    Shapes:
        input ``(B, in_channels, H, W)`` float, output ``(B, num_classes)`` logits.

    Example:
        >>> import torch
        >>> net = SmallCNN(in_channels=1, num_classes=10, width=8, hidden=32)
        >>> tuple(net(torch.zeros(2, 1, 8, 8)).shape)
        (2, 10)
        >>> net.classifier[3]
        Linear(in_features=32, out_features=10, bias=True)
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        check_sizes(in_channels=in_channels, num_classes=num_classes, width=width, hidden=hidden)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = classifier_head(2 * width * 4, hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise SemvecValueError(
                f"SmallCNN expects images of shape (B, {self.in_channels}, H, W); "
                f"got {tuple(x.shape)}."
            )
        return self.classifier(self.features(x))


def check_sizes(**sizes: int) -> None:
    """Each size an integer of at least 1, else one error naming it (the networks' arguments)."""
    for name, value in sizes.items():
        check_int(name, value, 1)


def classifier_head(features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """``Flatten``, ``Linear(features, hidden)``, ``ReLU``, ``Linear(hidden, num_classes)``:
    modules ``classifier.0`` to ``classifier.3`` of the small networks."""
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
