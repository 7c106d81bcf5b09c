"""Layer names no file system takes as they are (10,000 characters, a NUL byte) still give a
report and projector files, under bounded names that keep the layers apart."""

from __future__ import annotations

import warnings

import pytest
import torch

from lightning_semvec import StaticKnowledge
from lightning_semvec.projector import read_embedding_tensor, read_projector_config, write_embedding
from lightning_semvec.report.html import write_report

LONG, OTHER_LONG, NUL = "x" * 10_000, "x" * 9_999 + "y", "a\x00b"


@pytest.fixture(autouse=True)
def _no_glyph_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def test_the_report_takes_very_long_and_nul_layer_names(tmp_path):
    # Before: OSError [Errno 36] File name too long for the 10,000-character name.
    knowledge = StaticKnowledge.from_vectors({name: torch.randn(5, 3) for name in (LONG, OTHER_LONG, NUL)})
    index = write_report(knowledge.save(tmp_path / "k.semvec.safetensors"), tmp_path / "report")
    figures = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    # A heatmap each, a PCA figure for the two without cards (the first has its map inline).
    assert len(figures) == 5 and max(len(name) for name in figures) < 100
    page = index.read_text()
    for figure in figures:
        assert f'src="{figure}"' in page


def test_the_projector_takes_very_long_and_nul_tags(tmp_path):
    # Before: ENAMETOOLONG for the long tag and "embedded null byte" (ValueError) for the NUL.
    written = {tag: torch.randn(4, 2) for tag in (LONG, OTHER_LONG, NUL)}
    for tag, vectors in written.items():
        write_embedding(tmp_path, tag, vectors)
    entries = {entry.tag: entry for entry in read_projector_config(tmp_path)}
    assert set(entries) == set(written)
    assert len({entry.tensor_path for entry in entries.values()}) == 3  # the two long tags stay apart
    for tag, vectors in written.items():
        assert len(entries[tag].tensor_path) < 140
        torch.testing.assert_close(torch.as_tensor(read_embedding_tensor(tmp_path, entries[tag])), vectors)


def test_a_report_that_fails_half_way_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    """Before: figures of the new run were written beside the old index.html, which then showed
    another file's figures; now the folder is replaced only once all is written."""
    import matplotlib.figure

    first = StaticKnowledge.from_vectors({"fc": torch.randn(5, 3), "conv": torch.randn(4, 3)})
    index = write_report(first.save(tmp_path / "a.semvec.safetensors"), tmp_path / "report")
    before = {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()}
    real_savefig, saved = matplotlib.figure.Figure.savefig, []

    def filling_up(self, *args, **kwargs):
        saved.append(args[0])
        if len(saved) == 3:
            raise OSError(28, "No space left on device")
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", filling_up)
    second = StaticKnowledge.from_vectors({"fc": torch.randn(5, 3), "conv": torch.randn(4, 3)})
    with pytest.raises(OSError, match="No space left"):
        write_report(second.save(tmp_path / "b.semvec.safetensors"), tmp_path / "report", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()} == before
    assert "a.semvec.safetensors" in index.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.semvec.safetensors", "b.semvec.safetensors", "report"]
