"""The projector's list of embeddings, ``projector_config.pbtxt``: its entries, parsed and merged.

TensorBoard reads ``<log_dir>/projector_config.pbtxt`` (a ``ProjectorConfig`` protobuf in
text form) to list a run's embeddings. ``SummaryWriter.add_embedding`` rewrites it from the
entries one writer has seen, so a resumed run erases the entries of the runs before it;
:func:`merge_entry` instead adds to what is on disk, replacing only an entry of the same name.

Example:
    >>> from lightning_semvec.projector.storage import LogDir
    >>> folder = LogDir.open("memory://semvec-config-doctest")
    >>> config = load_config(folder)
    >>> merge_entry(folder, config, EmbeddingEntry("fc:00001", "00001/fc/tensors.tsv", (3, 2)))
    >>> [(e.tensor_name, e.tensor_shape) for e in entries_of(load_config(folder))]
    [('fc:00001', (3, 2))]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector.storage import LogDir

__all__ = [
    "CONFIG_FILENAME",
    "LATEST_PREFIX",
    "EmbeddingEntry",
    "entries_of",
    "load_config",
    "merge_entry",
    "save_config",
]

#: The projector's config file, read by TensorBoard in each run directory.
CONFIG_FILENAME = "projector_config.pbtxt"
#: Starts the name of the entry that lists the latest export once more (see
#: :func:`~lightning_semvec.projector.write_latest_entry`); it sorts before letters and digits.
LATEST_PREFIX = "(latest) "


@dataclass(frozen=True)
class EmbeddingEntry:
    """One embedding listed in a ``projector_config.pbtxt`` (paths relative to its folder).

    Attributes:
        tensor_name: ``"<tag>:<step:05d>"``, the name the projector shows.
        tensor_path: the ``tensors.tsv`` file.
        tensor_shape: ``(N, d)`` when known, else ``()``.
        metadata_path: the ``metadata.tsv`` file, or ``""``.
        sprite_path: the ``sprite.png`` file, or ``""``.
        sprite_dim: ``(width, height)`` of one thumbnail in the sprite, or ``()``.
        bookmarks_path: the ``bookmarks.txt`` file (the projector's saved views, listed in
            its "Bookmarks" panel; see :mod:`lightning_semvec.projector.bookmarks`), or ``""``.

    A name starting with :data:`LATEST_PREFIX` lists another entry's files once more
    (:attr:`is_latest`); :attr:`tag` and :attr:`step` are those of that entry.

    Example:
        >>> entry = EmbeddingEntry("net.fc:00042", "00042/net.fc/tensors.tsv")
        >>> entry.tag, entry.step, entry.is_latest
        ('net.fc', 42, False)
        >>> latest = EmbeddingEntry("(latest) net.fc:00042", "00042/net.fc/tensors.tsv")
        >>> latest.tag, latest.step, latest.is_latest
        ('net.fc', 42, True)
    """

    tensor_name: str
    tensor_path: str
    tensor_shape: tuple[int, ...] = ()
    metadata_path: str = ""
    sprite_path: str = ""
    sprite_dim: tuple[int, ...] = ()
    bookmarks_path: str = ""

    @property
    def is_latest(self) -> bool:
        """Whether this entry lists the run's latest export once more (a ``(latest)`` name)."""
        return self.tensor_name.startswith(LATEST_PREFIX)

    @property
    def tag(self) -> str:
        """The tag (layer name) part of :attr:`tensor_name`."""
        name = self.tensor_name.removeprefix(LATEST_PREFIX)
        tag, _, step = name.rpartition(":")
        return tag if tag and step.isdigit() else name

    @property
    def step(self) -> int | None:
        """The global step part of :attr:`tensor_name`, or ``None`` if it has none."""
        tag, _, step = self.tensor_name.removeprefix(LATEST_PREFIX).rpartition(":")
        return int(step) if tag and step.isdigit() else None


def load_config(folder: LogDir) -> Any:
    """The ``ProjectorConfig`` of ``folder`` (empty if it has no config file).

    Raises:
        ValueError: if the file is not a valid projector config.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = ProjectorConfig()
    if folder.exists(CONFIG_FILENAME):
        try:
            text_format.Parse(folder.read_bytes(CONFIG_FILENAME).decode("utf-8"), config)
        except (text_format.ParseError, UnicodeDecodeError) as err:
            raise SemvecValueError(
                f"{folder.url_of(CONFIG_FILENAME)!r} is not a valid projector config ({err}); "
                "fix or remove it."
            ) from err
    return config


def entries_of(config: Any) -> list[EmbeddingEntry]:
    """The embeddings a ``ProjectorConfig`` lists, in its order."""
    return [
        EmbeddingEntry(
            tensor_name=e.tensor_name,
            tensor_path=e.tensor_path,
            tensor_shape=tuple(int(s) for s in e.tensor_shape),
            metadata_path=e.metadata_path,
            sprite_path=e.sprite.image_path,
            sprite_dim=tuple(int(s) for s in e.sprite.single_image_dim),
            bookmarks_path=e.bookmarks_path,
        )
        for e in config.embeddings
    ]


def merge_entry(
    folder: LogDir, config: Any, entry: EmbeddingEntry, files: Mapping[str, bytes] | None = None
) -> None:
    """Add ``entry`` to ``config`` (replacing one of the same name) and save it in ``folder``.

    ``config`` is what :func:`load_config` returned; it is changed in place. ``files`` (the
    entry's tensors, metadata and sprite, by path in ``folder``) are written with the config as
    one unit: a failed write leaves the old files and the old config.
    """
    kept = [e for e in config.embeddings if e.tensor_name != entry.tensor_name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    info = config.embeddings.add()
    info.tensor_name = entry.tensor_name
    info.tensor_path = entry.tensor_path
    # A known shape spares TensorBoard reading every tensor file when it lists the config.
    info.tensor_shape.extend(entry.tensor_shape)
    if entry.metadata_path:
        info.metadata_path = entry.metadata_path
    if entry.sprite_path:
        info.sprite.image_path = entry.sprite_path
        info.sprite.single_image_dim.extend(entry.sprite_dim)
    if entry.bookmarks_path:
        info.bookmarks_path = entry.bookmarks_path
    save_config(folder, config, files)


def save_config(folder: LogDir, config: Any, files: Mapping[str, bytes] | None = None) -> None:
    """Write ``config`` (and ``files``, by path in ``folder``) as one unit: a failed write
    leaves the old files and the old config."""
    from google.protobuf import text_format

    folder.replace_together(
        {**(files or {}), CONFIG_FILENAME: text_format.MessageToString(config).encode("utf-8")})
