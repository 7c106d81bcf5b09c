"""GlyphsDataModule: split by font, deterministic, the font check, a user's font folder, the cache,
and a real Trainer with the callback's validation analysis on it."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import pytest
import torch
from tiny_models import trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.data import GlyphsDataModule
from lightning_semvec.data._glyph_fonts import CHARACTERS, check_font, matplotlib_fonts
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.models import ImageClassifier, SmallCNN

SMALL = {"samples_per_glyph": 2, "val_samples_per_glyph": 1, "test_samples_per_glyph": 1, "image_size": 16}


@pytest.fixture(scope="module")
def glyphs() -> GlyphsDataModule:
    dm = GlyphsDataModule(batch_size=31, cache_dir=False, **SMALL)
    dm.setup()
    return dm


def test_default_fonts_pass_the_check_and_symbol_fonts_do_not(glyphs):
    used = {f.path.name for f in (*glyphs.train_fonts, *glyphs.test_fonts)}
    assert len(used) == 22 and {"DejaVuSans.ttf", "STIXGeneral.ttf", "cmr10.ttf", "cmmi10.ttf"} <= used
    excluded = {name.rsplit("/", 1)[-1]: reason for name, reason in glyphs.excluded_fonts.items()}
    assert "symbol font" in excluded["cmsy10.ttf"] and "symbol font" in excluded["cmex10.ttf"]
    assert "no glyph" in excluded["DejaVuSansDisplay.ttf"]
    assert set(excluded) | used == {p.name for p in matplotlib_fonts()}


def test_split_is_by_font_and_stratified_by_family(glyphs):
    train, test = glyphs.train_fonts, glyphs.test_fonts
    assert (len(train), len(test)) == (16, 6)
    assert not {f.path for f in train} & {f.path for f in test}
    families = {f.family for f in train}
    assert families == {f.family for f in test} == {
        "DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif", "STIXGeneral", "Computer Modern"}
    # 62 classes x fonts x samples per glyph, every class equally often
    assert len(glyphs.train_dataset) == 62 * 16 * 2 and len(glyphs.test_dataset) == 62 * 6
    for dataset in (glyphs.train_dataset, glyphs.val_dataset, glyphs.test_dataset):
        images, labels = dataset.tensors
        assert images.shape[1:] == (1, 16, 16) and images.dtype == torch.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert torch.equal(torch.bincount(labels, minlength=62), torch.full((62,), len(labels) // 62))
    assert glyphs.class_names == list(CHARACTERS) and glyphs.num_classes == 62


def test_same_seed_same_data_other_seed_other_draws(glyphs):
    again = GlyphsDataModule(cache_dir=False, **SMALL)
    again.setup()
    for split in ("train_dataset", "val_dataset", "test_dataset"):
        assert torch.equal(getattr(glyphs, split).tensors[0], getattr(again, split).tensors[0]), split
    other = GlyphsDataModule(cache_dir=False, seed=1, **SMALL)
    other.setup()
    assert not torch.equal(glyphs.val_dataset.tensors[0], other.val_dataset.tensors[0])


def test_train_per_class_is_a_stratified_subset(glyphs):
    small = GlyphsDataModule(cache_dir=False, train_per_class=3, samples_per_glyph=1, val_samples_per_glyph=1,
                             test_samples_per_glyph=1, image_size=16)
    small.setup()
    labels = small.train_dataset.tensors[1]
    assert torch.equal(torch.bincount(labels, minlength=62), torch.full((62,), 3))
    too_many = GlyphsDataModule(cache_dir=False, train_per_class=17, samples_per_glyph=1, image_size=16)
    with pytest.raises(SemvecValueError, match="train_per_class=17 is more than the 16 training images"):
        too_many.setup()


def test_a_user_font_folder_and_its_rejected_fonts(tmp_path):
    folder = tmp_path / "fonts"
    folder.mkdir()
    fonts = {p.name: p for p in matplotlib_fonts()}
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf", "cmsy10.ttf"):
        shutil.copy(fonts[name], folder / name)
    (folder / "broken.ttf").write_bytes(b"not a font")
    dm = GlyphsDataModule(fonts=folder, held_out_fonts=1, cache_dir=False, **SMALL)
    with pytest.warns(UserWarning, match=r"left out 2 font\(s\): broken.ttf cannot be read .*cmsy10.ttf draws"):
        dm.setup()
    assert len(dm.train_fonts) == 2 and len(dm.test_fonts) == 1
    with pytest.raises(SemvecValueError, match="fonts: .* is not a folder"):
        GlyphsDataModule(fonts=tmp_path / "nowhere")
    with pytest.raises(SemvecValueError, match="3 usable font"):
        with pytest.warns(UserWarning):
            GlyphsDataModule(fonts=folder, held_out_fonts=3, cache_dir=False, **SMALL).setup()


def test_the_check_refuses_a_font_whose_glyphs_are_not_the_characters():
    fonts = {p.name: p for p in matplotlib_fonts()}
    font, reason = check_font(fonts["LastResortHE-Regular.ttf"])
    assert font is None and reason
    font, reason = check_font(fonts["DejaVuSansMono.ttf"])
    assert font is not None and font.family == "DejaVu Sans Mono" and reason == ""


def test_each_font_is_checked_once_a_process_until_its_file_changes(tmp_path, monkeypatch):
    """The demo sets up four data modules on one font folder: the second finds every check
    done; a font file rewritten since is checked again."""
    from lightning_semvec.data import _glyph_fonts

    folder = tmp_path / "fonts"
    folder.mkdir()
    fonts = {p.name: p for p in matplotlib_fonts()}
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf"):
        shutil.copy(fonts[name], folder / name)
    checked = []
    real = _glyph_fonts.check_font
    monkeypatch.setattr(_glyph_fonts, "check_font", lambda path: checked.append(path.name) or real(path))
    GlyphsDataModule(fonts=folder, held_out_fonts=1, cache_dir=False, **SMALL).setup()
    assert sorted(checked) == ["DejaVuSans.ttf", "DejaVuSerif.ttf", "cmr10.ttf"]
    GlyphsDataModule(fonts=folder, held_out_fonts=1, cache_dir=False, **SMALL).setup()
    assert len(checked) == 3
    (folder / "cmr10.ttf").write_bytes(b"not a font any more")
    with pytest.warns(UserWarning, match="cmr10.ttf cannot be read"):
        GlyphsDataModule(fonts=folder, held_out_fonts=1, cache_dir=False, **SMALL).setup()
    assert checked[3:] == ["cmr10.ttf"]


def test_rendered_once_then_read_from_the_cache(tmp_path, monkeypatch):
    first = GlyphsDataModule(cache_dir=tmp_path, **SMALL)
    first.setup()
    files = list(tmp_path.glob("glyphs-*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(GlyphsDataModule, "_render", lambda self: pytest.fail("rendered again"))
    second = GlyphsDataModule(cache_dir=tmp_path, **SMALL)
    second.setup()
    assert torch.equal(first.train_dataset.tensors[0], second.train_dataset.tensors[0])


def test_a_trainer_learns_the_glyphs_with_the_callback_analysing_them(glyphs):
    semvec = SemanticVectorCallback(
        layers=["net.classifier.3"], dim=8,
        analysis=AnalysisOptions(log_every_n_epochs=1, projector=False, figures=False))
    model = ImageClassifier(SmallCNN(1, 62, width=8, hidden=32), num_classes=62)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(max_epochs=1, limit_val_batches=2))
    trainer.fit(model, datamodule=glyphs)
    knowledge = semvec.to_knowledge()
    assert knowledge.class_names == list(CHARACTERS)
    assert knowledge["net.classifier.3"].vectors.shape == (62, 8)
