"""The fonts of :class:`~lightning_semvec.data.GlyphsDataModule`: finding them, checking that each
renders every class, and rendering the 62 characters of one font.

A font is kept only if, for each of the 62 characters, its glyph is drawn (not empty), is not the
font's missing-glyph box, fits the canvas, and differs from every other character's; and, where the
font names its glyphs, the glyph is the character's own (Adobe Glyph List names such as ``zero`` or
``A``, old-style digits accepted): this excludes symbol fonts that map letters to other shapes
(``cmsy10``, ``cmex10``) as well as fonts with no Latin glyphs.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CANVAS", "CHARACTERS", "Font", "check_font", "checked_font", "font_files", "matplotlib_fonts",
           "render_font"]

#: The 62 classes, in class-index order: digits, upper case, lower case.
CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase
#: Side of the square canvas each glyph is first drawn on (then augmented and shrunk).
CANVAS = 64
_FONT_SIZE, _BASELINE = 40, 46  # every glyph on one baseline at one size: "o" stays smaller than "O"
_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MISSING = "\ue000"  # a private-use code point: no text font draws it, so it shows the missing-glyph box
_COMPUTER_MODERN = re.compile(r"cm[a-z]+\d+")  # matplotlib's BaKoMa fonts are named cmr10, cmss10, ...


@dataclass(frozen=True)
class Font:
    """A font file that passed :func:`check_font`, and the family its split is stratified by."""

    path: Path
    family: str
    style: str

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()


def matplotlib_fonts() -> list[Path]:
    """The TrueType files inside matplotlib (``mpl-data/fonts/ttf``), sorted by name."""
    import matplotlib

    return sorted(Path(matplotlib.get_data_path(), "fonts", "ttf").glob("*.ttf"))


def font_files(fonts: str | Path | Iterable[str | Path]) -> list[Path]:
    """A folder's ``.ttf``/``.otf`` files (sorted), or the given files; raises ``ValueError`` for
    a path that is not there or a folder with no font."""
    if isinstance(fonts, (str, Path)):
        folder = Path(fonts).expanduser()
        if not folder.is_dir():
            raise ValueError(f"fonts={str(fonts)!r} is not a folder: pass a folder of .ttf/.otf files "
                             "or a list of font files.")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".ttf", ".otf"))
        if not found:
            raise ValueError(f"The folder {str(folder)!r} holds no .ttf or .otf file.")
        return found
    paths = [Path(p).expanduser() for p in fonts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"These font files do not exist: {missing}.")
    return paths


def render_font(path: Path) -> Tensor:
    """The 62 characters of the font at ``path`` as ``(62, CANVAS, CANVAS)`` float32 in ``[0, 1]``
    (white glyph on black), each centred horizontally on one baseline at one size."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(path), _FONT_SIZE)
    images = []
    for character in (*CHARACTERS, _MISSING):
        image = Image.new("L", (CANVAS, CANVAS), 0)
        ImageDraw.Draw(image).text((CANVAS // 2, _BASELINE), character, fill=255, font=font, anchor="ms")
        images.append(np.asarray(image, dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(images))


def check_font(path: Path) -> tuple[Font | None, str]:
    """``(Font, "")`` if the font renders all 62 classes as themselves, else ``(None, reason)``."""
    from matplotlib.ft2font import FT2Font

    try:
        face = FT2Font(str(path))
        glyphs = render_font(path)
    except (OSError, RuntimeError, ValueError) as err:
        return None, f"cannot be read as a font ({err})"
    family, style = face.family_name or path.stem, face.style_name or ""
    if _COMPUTER_MODERN.fullmatch(family):
        family, style = "Computer Modern", family  # one family; the style is the face (cmr10, cmti10)
    font = Font(path, family, style)
    characters, missing_box = glyphs[:-1], glyphs[-1]
    drawn = characters.flatten(1).amax(dim=1) > 0
    if not drawn.all():
        return None, f"has no glyph for {_listed(~drawn)}"
    boxes = (characters == missing_box).flatten(1).all(dim=1)
    if boxes.any():
        return None, f"shows its missing-glyph box for {_listed(boxes)}"
    names = _glyph_names(face)
    if names is not None:
        wrong = [c for c, name in zip(CHARACTERS, names, strict=True) if not _is_own_glyph(c, name)]
        if wrong:
            return None, f"draws other shapes for {''.join(wrong[:8])!r} (a symbol font)"
    edges = torch.cat([characters[:, 0], characters[:, -1], characters[:, :, 0], characters[:, :, -1]], dim=1)
    clipped = edges.amax(dim=1) > 0
    if clipped.any():
        return None, f"draws {_listed(clipped)} beyond the canvas"
    if len({bytes(glyph.numpy().tobytes()) for glyph in characters}) < len(CHARACTERS):
        return None, "draws two characters the same"
    return font, ""


def checked_font(path: Path) -> tuple[Font | None, str]:
    """:func:`check_font`, remembered in this process while the file keeps its size and time:
    checking renders all 62 glyphs (0.55 s for matplotlib's 40 fonts), and the demo sets up four
    data modules on the same fonts."""
    try:
        stat = path.stat()
    except OSError:
        return check_font(path)  # its own error message for a file that cannot be read
    return _check_font_once(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _check_font_once(path: str, size: int, mtime_ns: int) -> tuple[Font | None, str]:
    return check_font(Path(path))


def _glyph_names(face: object) -> list[str] | None:
    from matplotlib.ft2font import FaceFlags

    if not FaceFlags.GLYPH_NAMES & face.face_flags:  # type: ignore[attr-defined]  # FT2Font's, untyped
        return None
    return [face.get_glyph_name(face.get_char_index(ord(c))) for c in CHARACTERS]  # type: ignore[attr-defined]


def _is_own_glyph(character: str, name: str) -> bool:
    own = _DIGIT_NAMES[int(character)] if character.isdigit() else character
    return name == own or name.startswith((f"{own}oldstyle", f"{own}."))


def _listed(mask: Tensor) -> str:
    chosen = "".join(c for c, keep in zip(CHARACTERS, mask.tolist(), strict=True) if keep)
    return repr(chosen[:8] + ("..." if len(chosen) > 8 else ""))
