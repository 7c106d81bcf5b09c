"""A three-stage pooled convolutional network for 32x32 images (glyphs, CIFAR)."""

from __future__ import annotations

from torch import Tensor, nn

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.models.small_cnn import check_sizes, classifier_head


class PooledCNN(nn.Module):
    """Three 3x3 convolutions, each followed by a ReLU and a pooling, and a two-layer head.

    The two max-poolings halve the map twice and a 4x4 adaptive average pool ends the
    features, so a 32x32 image costs a quarter of :class:`SmallCNN`'s full-resolution
    convolutions per stage, while the head sees where the strokes are (4x4 cells). Inputs of
    at least 4x4 work. Module names, for hooking layers by name (prefix them with ``net.``
    inside :class:`~lightning_semvec.models.ImageClassifier`):

    - ``features.0``: ``Conv2d(in_channels, width, 3, padding=1)``, out ``(B, width, H, W)``
    - ``features.1``: ``ReLU``; ``features.2``: ``MaxPool2d(2)``, out ``(B, width, H/2, W/2)``
    - ``features.3``: ``Conv2d(width, 2*width, 3, padding=1)``; ``features.4``: ``ReLU``;
      ``features.5``: ``MaxPool2d(2)``, out ``(B, 2*width, H/4, W/4)``
    - ``features.6``: ``Conv2d(2*width, 4*width, 3, padding=1)``; ``features.7``: ``ReLU``;
      ``features.8``: ``AdaptiveAvgPool2d(4)``, out ``(B, 4*width, 4, 4)``
    - ``classifier.0``: ``Flatten``, out ``(B, 64*width)``
    - ``classifier.1``: ``Linear(64*width, hidden)``; ``classifier.2``: ``ReLU``, out
      ``(B, hidden)``
    - ``classifier.3``: ``Linear(hidden, num_classes)``, the logits ``(B, num_classes)``

    The glyph benchmark's teacher is ``PooledCNN(width=32, hidden=64)`` (228k parameters at 62
    classes), its student ``PooledCNN(width=8, hidden=32)`` (24k).

    Args:
        in_channels: channels of the input images.
        num_classes: number of logits.
        width: channels of the first convolution (then ``2 * width`` and ``4 * width``).
        hidden: units of the hidden fully connected layer.

    Shapes:
        input ``(B, in_channels, H, W)`` float with ``H, W >= 4``, output
        ``(B, num_classes)`` logits.

    Example:
        >>> import torch
        >>> net = PooledCNN(in_channels=1, num_classes=62, width=8)
        >>> tuple(net(torch.zeros(2, 1, 32, 32)).shape)
        (2, 62)
        >>> sum(p.numel() for p in net.parameters())
        42750
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 62, width: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        check_sizes(in_channels=in_channels, num_classes=num_classes, width=width, hidden=hidden)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = classifier_head(4 * width * 16, hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, in_channels, H, W)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 4:
            raise SemvecValueError(
                f"PooledCNN expects images of shape (B, {self.in_channels}, H, W) with H and W "
                f"at least 4; got {tuple(x.shape)}."
            )
        return self.classifier(self.features(x))
