"""The projector's images: thumbnails, the per-neuron grid, the sprite and its PNG encoder."""

import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector import (
    MAX_SPRITE_SIDE,
    encode_png,
    make_sprite,
    sprite_thumbnail_size,
    tile_images,
    to_thumbnails,
)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 5, 11), (2, 3, 64, 48)])
def test_thumbnails_of_any_size_and_channels(shape):
    thumbs = to_thumbnails(torch.randn(*shape), 16)
    assert thumbs.shape == (2, 3, 16, 16) and thumbs.dtype == torch.uint8
    assert thumbs.amax(dim=(1, 2, 3)).tolist() == [255, 255]
    assert thumbs.amin(dim=(1, 2, 3)).tolist() == [0, 0]
    with pytest.raises(ValueError, match="C in"):
        to_thumbnails(torch.zeros(2, 2, 4, 4), 4)
    with pytest.raises(SemvecValueError, match="size must be an integer >= 1, got 0"):
        to_thumbnails(torch.zeros(2, 1, 4, 4), 0)


def test_sprite_limits_for_wide_layers():
    for n, k in ((16384, 1), (16384, 9), (65536, 1), (3, 9)):
        size = sprite_thumbnail_size(n, k)
        grid = int(np.ceil(np.sqrt(k)))
        assert int(np.ceil(np.sqrt(n))) * grid * size <= MAX_SPRITE_SIDE
        assert n * k * 3 * size * size <= 128 * 2**20


@pytest.mark.parametrize(
    "args, match",
    [
        ((0,), "num_neurons must be an integer >= 1, got 0"),
        ((True,), "num_neurons must be an integer >= 1, got True"),
        ((10, 0), "images_per_neuron must be an integer >= 1, got 0"),
        ((10, 1, 2.5), "max_size must be an integer >= 1, got 2.5"),
    ],
)
def test_sprite_thumbnail_size_rejects_bad_arguments(args, match):
    with pytest.raises(SemvecValueError, match=match):
        sprite_thumbnail_size(*args)


def test_tile_and_sprite_layout():
    images = torch.arange(3 * 2 * 1 * 2 * 2, dtype=torch.uint8).view(3, 2, 1, 2, 2)
    tiled = tile_images(images)  # 2 images per neuron: a 2 x 2 grid, the last two places black
    assert tiled.shape == (3, 1, 4, 4)
    assert torch.equal(tiled[1, 0, :2, 2:], images[1, 1, 0]) and tiled[1, 0, 2:].eq(0).all()
    sprite = make_sprite(tiled.numpy())  # 3 neurons: a 2 x 2 grid of cells, the last black
    assert sprite.shape == (8, 8, 1)
    assert np.array_equal(sprite[4:, :4, 0], tiled[2, 0].numpy()) and not sprite[4:, 4:].any()
    with pytest.raises(SemvecValueError, match=r"images must be \(N, k, C, t, t\)"):
        tile_images(torch.zeros(3, 1, 4, 4))
    with pytest.raises(SemvecValueError, match=r"images must be \(N, C, h, w\) with N >= 1"):
        make_sprite(np.zeros((0, 3, 4, 4), dtype=np.uint8))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("content", ["smooth", "noise"])
def test_encode_png_round_trips_through_pillow(channels, content, monkeypatch):
    g = np.random.default_rng(0)
    if content == "smooth":  # compresses: zlib at level 1
        pixels = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None] * 6, (40, 30, channels))
    else:  # does not compress: stored (level 0), which only saves time, so watch the level
        pixels = g.integers(0, 256, (40, 30, channels), dtype=np.uint8)
    levels = []
    compress = zlib.compress
    monkeypatch.setattr(zlib, "compress", lambda data, level: levels.append(level) or
                        compress(data, level))
    data = encode_png(np.ascontiguousarray(pixels))
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(decoded.reshape(40, 30, channels), pixels)
    assert levels[-1] == (1 if content == "smooth" else 0)  # the last call compresses the image
    if content == "smooth":
        assert len(data) < pixels.size // 4


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4), dtype=np.uint8),
     np.zeros((4, 4, 2), dtype=np.uint8)],
)
def test_encode_png_rejects_what_it_cannot_encode(pixels):
    with pytest.raises(SemvecValueError, match=r"pixels must be \(H, W, C\) uint8 with C in"):
        encode_png(pixels)
