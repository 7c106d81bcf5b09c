"""Time to write one wide layer to TensorBoard's Embedding Projector (the target: < 5 s).

    python benchmarks/projector_benchmark.py          # 16,384 neurons, d = 32, top-1 images
    python benchmarks/projector_benchmark.py --images grid --dim 64
    python benchmarks/projector_benchmark.py --pixels digits     # compressible thumbnails
    python benchmarks/projector_benchmark.py --neurons 65536 --repeats 1

Builds what the callback writes at the end of a validation epoch for one layer: the ``(N, d)``
vectors, the metadata columns (from random statistics) and, unless ``--images off``, the
sprite of each neuron's top validation inputs (random pixels by default: the worst case for
the PNG encoder; ``--pixels digits`` uses real digit thumbnails), then times
:func:`lightning_semvec.projector.write_embedding` (tensors.tsv, metadata.tsv, sprite.png and
the merged projector_config.pbtxt) into a fresh folder. Each repetition writes a new step
into the same folder, so the config merge sees the earlier entries, as in a long run. Prints
the median and worst wall time, and the time of each file on its own.

With images, it also times the package's PNG encoder against Pillow at ``compress_level=1``
on both sprites, digits and noise, side by side (best of ``--repeats``): the encoder's gain
over Pillow is large only on noise, about 2x on real thumbnails.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lightning_semvec.projector import (
    encode_png,
    make_sprite,
    neuron_metadata,
    sprite_thumbnail_size,
    tile_images,
    to_thumbnails,
    write_embedding,
)
from lightning_semvec.projector.writer import metadata_tsv

TARGET_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--images", choices=["off", "top1", "grid"], default="top1")
    parser.add_argument("--top-k", type=int, default=9, help="images per neuron for --images grid")
    parser.add_argument("--pixels", choices=["noise", "digits"], default="noise",
                        help="thumbnail content: random pixels (worst case) or digit images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    n, classes = args.neurons, 10
    vectors = torch.randn(n, args.dim, generator=g)
    stats = {
        "preferred_class": torch.randint(0, classes, (n,), generator=g),
        "selectivity": torch.rand(n, generator=g),
        "mean_activation": torch.rand(n, generator=g) * 3,
        "dead": torch.rand(n, generator=g) < 0.05,
    }
    sprites: dict[str, torch.Tensor] = {}
    if args.images != "off":
        k = 1 if args.images == "top1" else args.top_k
        size = sprite_thumbnail_size(n, k)
        noise = torch.randint(0, 256, (n, k, 3, size, size), dtype=torch.uint8, generator=g)
        sprites["noise"] = tile_images(noise)
        sprites["digits"] = tile_images(digit_thumbnails(n * k, size, g).view(n, k, 3, size, size))
    sprite = sprites.get(args.pixels)

    def build() -> dict:
        return neuron_metadata("layer", n, stats, [f"class {c}" for c in range(classes)])

    print(f"{n} neurons, d = {args.dim}, images {args.images} ({args.pixels})"
          + (f" ({tuple(sprite.shape[1:])} per neuron)" if sprite is not None else ""))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in range(args.repeats):
            start = time.perf_counter()
            write_embedding(tmp, "layer", vectors, step, build(), sprite)
            times.append(time.perf_counter() - start)
        sizes = {p.name: p.stat().st_size for p in (Path(tmp) / f"{0:05d}" / "layer").iterdir()}

        # The parts on their own, to see where the time goes.
        parts: dict[str, float] = {}
        start = time.perf_counter()
        with open(Path(tmp) / "t.tsv", "wb") as handle:
            np.savetxt(handle, vectors.numpy(), fmt="%.7g", delimiter="\t")
        parts["tensors.tsv"] = time.perf_counter() - start
        start = time.perf_counter()
        metadata_tsv(build(), n)
        parts["metadata.tsv (format)"] = time.perf_counter() - start
        if sprite is not None:
            start = time.perf_counter()
            (Path(tmp) / "s.png").write_bytes(encode_png(make_sprite(sprite.numpy())))
            parts["sprite.png"] = time.perf_counter() - start

    verdict = "OK" if max(times) < TARGET_SECONDS else "ABOVE TARGET"
    print(f"write_embedding: median {statistics.median(times):.2f} s, worst {max(times):.2f} s "
          f"over {len(times)} writes (target < {TARGET_SECONDS:.0f} s): {verdict}")
    for name, seconds in parts.items():
        print(f"  {name:<24} {seconds:.2f} s")
    listing = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(sizes.items()))
    print(f"  file sizes: {listing}")
    if sprites:
        compare_with_pillow(sprites, args.repeats)


def digit_thumbnails(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, size, size)`` thumbnails of scikit-learn's digits, drawn at random."""
    from lightning_semvec.data import DigitsDataModule

    data = DigitsDataModule()
    data.setup()
    images = data.train_dataset.tensors[0]
    chosen = torch.randint(0, len(images), (count,), generator=generator)
    return to_thumbnails(images[chosen], size)


def compare_with_pillow(sprites: dict[str, torch.Tensor], repeats: int) -> None:
    """Print encode_png against Pillow (compress_level=1) on each sprite: times, sizes, ratio."""
    from PIL import Image

    def pillow(pixels: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(
            buffer, format="PNG", compress_level=1
        )
        return buffer.getvalue()

    print("sprite.png encoder against Pillow (compress_level=1), best of "
          f"{max(1, repeats)}:")
    for name, sprite in sprites.items():
        pixels = make_sprite(sprite.numpy())
        timed = {}
        for label, encode in (("encode_png", encode_png), ("Pillow", pillow)):
            best, size = float("inf"), 0
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                size = len(encode(pixels))
                best = min(best, time.perf_counter() - start)
            timed[label] = (best, size)
        (ours, ours_size), (theirs, theirs_size) = timed["encode_png"], timed["Pillow"]
        print(f"  {name:<6} {pixels.shape[1]}x{pixels.shape[0]}: encode_png {ours:.2f} s "
              f"({ours_size / 2**20:.1f} MiB), Pillow {theirs:.2f} s "
              f"({theirs_size / 2**20:.1f} MiB): {theirs / ours:.1f}x faster")


if __name__ == "__main__":
    main()
