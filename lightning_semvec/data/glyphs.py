"""62 characters rendered from fonts as a LightningDataModule: a task where a teacher's knowledge
matters, with no download (the default fonts ship inside matplotlib)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.files import temporary_sibling
from lightning_semvec.data._glyph_augment import Augmentation, augment
from lightning_semvec.data._glyph_fonts import (
    CHARACTERS,
    Font,
    checked_font,
    font_files,
    matplotlib_fonts,
    render_font,
)
from lightning_semvec.data.split_datamodule import SplitDataModule
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

__all__ = ["GlyphsDataModule", "default_cache_dir"]

_CACHE_VERSION = 1  # part of every cache key: a change to the rendering makes new files


def default_cache_dir() -> Path:
    """Where rendered glyph sets are kept: ``$LIGHTNING_SEMVEC_CACHE``, else
    ``$XDG_CACHE_HOME/lightning_semvec``, else ``~/.cache/lightning_semvec``."""
    if os.environ.get("LIGHTNING_SEMVEC_CACHE"):
        return Path(os.environ["LIGHTNING_SEMVEC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lightning_semvec"


class GlyphsDataModule(SplitDataModule):
    """The 62 characters ``0-9``, ``A-Z``, ``a-z`` drawn from fonts, split by font.

    Each sample is one character of one font drawn anew at ``image_size`` x ``image_size``, with
    its own scale, rotation, shift, stroke width, blur and noise (:class:`Augmentation`). The
    fonts are split by file: training and validation images come from the training fonts (other
    draws), test images from ``held_out_fonts`` fonts the network never sees, chosen stratified
    by family (one DejaVu Sans, one DejaVu Serif, ... with the defaults), so test accuracy
    measures how the characters' shapes generalise, and look-alikes (``0``/``O``, ``l``/``1``,
    ``C``/``G``) are what the network finds hard.

    Fonts: by default the TrueType files inside matplotlib, of which 22 pass the check (DejaVu
    Sans, Sans Mono and Serif in four styles each, STIXGeneral in four, six Computer Modern);
    or a folder of ``.ttf``/``.otf`` files, or a list of them. A font is used only if it draws
    all 62 characters as themselves (not empty, not its missing-glyph box, within the canvas, all
    distinct, and named as the character where the font names its glyphs), which leaves out
    symbol fonts; ``excluded_fonts`` says which were left out and why (a warning says so for
    fonts you passed).

    Rendering the default set (23,684 images) takes 9 to 10 s on an idle 2-core machine, torch's
    import included (loading it from the cache: 0.6 s); it is done once per setting and
    kept in ``cache_dir`` (:func:`default_cache_dir`, e.g. ``~/.cache/lightning_semvec``, as
    ``glyphs-<key>.pt``, about 25 MB); delete that folder to clear it. ``cache_dir=False``
    renders every time.

    Args:
        batch_size: samples per batch.
        fonts: a folder of fonts or a list of font files; ``None``: matplotlib's.
        held_out_fonts: fonts kept for the test split (at least 1, fewer than the usable fonts).
        samples_per_glyph: training images per training font and character.
        val_samples_per_glyph: validation images per training font and character.
        test_samples_per_glyph: test images per held-out font and character.
        train_per_class: keep only this many training images per character (a stratified
            subset fixed by ``seed``), for small-data students; ``None`` keeps all.
        image_size: side of the images (the canvas is 64 pixels; at most 64).
        augmentation: the random changes; ``None`` draws every sample the same (clean glyphs).
        seed: fixes the font split, every draw, the subset and the training shuffle.
        num_workers: worker processes per loader.
        cache_dir: a folder for rendered sets, ``None`` for :func:`default_cache_dir`, ``False``
            for no cache.

    Attributes:
        num_classes: 62.
        class_names: the characters, ``["0", ..., "9", "A", ..., "Z", "a", ..., "z"]``.
        image_shape: ``(1, image_size, image_size)``.
        train_fonts, test_fonts: the :class:`Font` of each split, set by :meth:`setup`.
        excluded_fonts: ``{font file: reason}`` of the fonts left out, set by :meth:`setup`.
        train_dataset, val_dataset, test_dataset: ``TensorDataset`` of ``(image (1, S, S)
            float32 in [0, 1], label int64)``, set by :meth:`setup`.

    Example:
        >>> import tempfile
        >>> dm = GlyphsDataModule(batch_size=32, samples_per_glyph=2, val_samples_per_glyph=1,
        ...                       test_samples_per_glyph=1, cache_dir=False)
        >>> dm.setup()
        >>> len(dm.train_fonts), len(dm.test_fonts), len(dm.train_dataset), len(dm.test_dataset)
        (16, 6, 1984, 372)
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), dm.class_names[10], dm.class_names[36]
        ((32, 1, 32, 32), 'A', 'a')
    """

    num_classes: int = len(CHARACTERS)
    class_names: ClassVar[list[str]] = list(CHARACTERS)

    def __init__(
        self,
        batch_size: int = 64,
        fonts: str | Path | Iterable[str | Path] | None = None,
        held_out_fonts: int = 6,
        samples_per_glyph: int = 20,
        val_samples_per_glyph: int = 2,
        test_samples_per_glyph: int = 5,
        train_per_class: int | None = None,
        image_size: int = 32,
        augmentation: Augmentation | None = Augmentation(),  # noqa: B008  # frozen dataclass
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | Path | bool | None = None,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("held_out_fonts", held_out_fonts, 1)
        for name, value in (("samples_per_glyph", samples_per_glyph), ("val_samples_per_glyph", val_samples_per_glyph),
                            ("test_samples_per_glyph", test_samples_per_glyph)):
            check_int(name, value, 1)
        if train_per_class is not None:
            check_int("train_per_class", train_per_class, 1)
        check_int("image_size", image_size, 8, hint="(the side of the images in pixels, 8 to 64)")
        if image_size > 64:
            raise SemvecValueError(f"image_size must be at most 64 (the glyphs' canvas), got {image_size}.")
        check_int("num_workers", num_workers, 0)
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise SemvecTypeError(f"augmentation must be an Augmentation or None, got {type(augmentation).__name__}.")
        if cache_dir is True:
            cache_dir = None
        try:
            self.font_paths = matplotlib_fonts() if fonts is None else font_files(fonts)
        except (ValueError, TypeError) as err:
            raise SemvecValueError(f"fonts: {err}") from None
        self.save_hyperparameters(ignore=["fonts"])
        self.user_fonts = fonts is not None
        self.batch_size, self.held_out_fonts = batch_size, held_out_fonts
        self.samples = {"train": samples_per_glyph, "val": val_samples_per_glyph, "test": test_samples_per_glyph}
        self.train_per_class, self.image_size, self.augmentation = train_per_class, image_size, augmentation
        self.seed, self.num_workers = seed, num_workers
        self.cache_dir: Path | None = None if cache_dir is False else (
            default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser())
        self.image_shape: tuple[int, int, int] = (1, image_size, image_size)
        self.train_fonts: list[Font] = []
        self.test_fonts: list[Font] = []
        self.excluded_fonts: dict[str, str] = {}
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Check the fonts, split them, and render (or load from the cache) every split;
        later calls do nothing."""
        if self.train_dataset is not None:
            return
        fonts = self._checked_fonts()
        self.train_fonts, self.test_fonts = self._split(fonts)
        splits = self._cached_or_rendered()
        self.val_dataset, self.test_dataset = splits["val"], splits["test"]
        train = splits["train"]
        if self.train_per_class is not None:
            train = self._subset(train, self.train_per_class)
        self.train_dataset = train

    # ------------------------------------------------------------------ internals
    def _checked_fonts(self) -> list[Font]:
        fonts = []
        for path in self.font_paths:
            font, reason = checked_font(path)
            if font is None:
                self.excluded_fonts[str(path)] = reason
            else:
                fonts.append(font)
        if self.user_fonts and self.excluded_fonts:
            listing = "; ".join(f"{Path(p).name} {r}" for p, r in self.excluded_fonts.items())
            warnings.warn(f"GlyphsDataModule: left out {len(self.excluded_fonts)} font(s): {listing}.", stacklevel=3)
        if len(fonts) <= self.held_out_fonts:
            raise SemvecValueError(
                f"GlyphsDataModule has {len(fonts)} usable font(s) and holds out {self.held_out_fonts} for "
                "testing: pass more fonts, or a smaller held_out_fonts, so that some remain for training.")
        return fonts

    def _split(self, fonts: list[Font]) -> tuple[list[Font], list[Font]]:
        """Training and held-out fonts, stratified by family where every family has two fonts and
        each split can hold one of each (else a plain random split)."""
        from sklearn.model_selection import train_test_split

        families = [font.family for font in fonts]
        counts = {family: families.count(family) for family in families}
        stratify = families if (min(counts.values()) >= 2 and len(counts) <= self.held_out_fonts
                                and len(counts) <= len(fonts) - self.held_out_fonts) else None
        train, test = train_test_split(np.arange(len(fonts)), test_size=self.held_out_fonts, stratify=stratify,
                                       random_state=self.seed)
        return [fonts[i] for i in sorted(train)], [fonts[i] for i in sorted(test)]

    def _cache_key(self) -> str:
        digest = hashlib.sha256()
        settings = {"version": _CACHE_VERSION, "samples": self.samples, "size": self.image_size, "seed": self.seed,
                    "augmentation": None if self.augmentation is None else repr(self.augmentation),
                    "split": [[f.path.name for f in self.train_fonts], [f.path.name for f in self.test_fonts]]}
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for font in (*self.train_fonts, *self.test_fonts):
            digest.update(hashlib.sha256(font.path.read_bytes()).digest())
        return digest.hexdigest()[:16]

    def _cached_or_rendered(self) -> dict[str, TensorDataset]:
        path = None if self.cache_dir is None else self.cache_dir / f"glyphs-{self._cache_key()}.pt"
        stored: dict[str, Tensor] | None = None
        if path is not None and path.is_file():
            try:
                stored = torch.load(path, weights_only=True)
            except (OSError, RuntimeError, EOFError):
                stored = None  # a damaged file: render again and replace it
        if stored is None:
            stored = self._render()
            if path is not None:
                _save_atomically(stored, path)
        return {split: TensorDataset(stored[f"{split}_images"].float().div_(255.0), stored[f"{split}_labels"])
                for split in ("train", "val", "test")}

    def _render(self) -> dict[str, Tensor]:
        stored = {}
        for index, (split, fonts) in enumerate((("train", self.train_fonts), ("val", self.train_fonts),
                                                ("test", self.test_fonts))):
            generator = torch.Generator().manual_seed(self.seed * 3 + index)
            images, labels = [], []
            for font in fonts:
                canvas = render_font(font.path)[: len(CHARACTERS)].repeat_interleave(self.samples[split], dim=0)
                drawn = augment(canvas, self.image_size, generator, self.augmentation)
                images.append(drawn.mul(255.0).round_().to(torch.uint8))
                labels.append(torch.arange(len(CHARACTERS)).repeat_interleave(self.samples[split]))
            stored[f"{split}_images"], stored[f"{split}_labels"] = torch.cat(images), torch.cat(labels)
        return stored

    def _subset(self, train: TensorDataset, per_class: int) -> TensorDataset:
        from sklearn.model_selection import train_test_split

        images, labels = train.tensors
        available = len(labels) // self.num_classes
        if per_class > available:
            raise SemvecValueError(
                f"train_per_class={per_class} is more than the {available} training images per character "
                f"({len(self.train_fonts)} fonts x samples_per_glyph={self.samples['train']}): lower it or "
                "raise samples_per_glyph.")
        if per_class == available:
            return train
        keep, _ = train_test_split(np.arange(len(labels)), train_size=per_class * self.num_classes,
                                   stratify=labels.numpy(), random_state=self.seed)
        keep = torch.from_numpy(np.sort(keep))
        return TensorDataset(images[keep], labels[keep])


def _save_atomically(stored: dict[str, Tensor], path: Path) -> None:
    """Write to a temporary sibling and rename it into place (a killed write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        torch.save(stored, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
