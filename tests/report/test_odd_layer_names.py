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
    assert len(figures) == 6 and max(len(name) for name in figures) < 100
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
