import pytest

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli import demo
from lightning_semvec.cli.demo import DEMO_TOP_INPUTS, LOGITS_LAYER, main
from lightning_semvec.projector import (
    projector_open_order,
    read_embedding_metadata,
    read_projector_config,
)


@pytest.fixture
def small_glyphs(monkeypatch, tmp_path):
    """The demo on a smaller glyph set (one draw per font and character, 5 a character for the
    students), its renders cached in the test's folder."""
    monkeypatch.setenv("LIGHTNING_SEMVEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "GLYPHS", {**demo.GLYPHS, "samples_per_glyph": 1, "test_samples_per_glyph": 1})
    monkeypatch.setattr(demo, "STUDENT_PER_CLASS", 5)


def test_demo_runs_end_to_end_announces_each_stage_and_never_overwrites(small_glyphs, tmp_path, capsys):
    result = main(epochs=1, out_dir=str(tmp_path / "runs"), progress_bar=False, student_epochs=1)
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "version_0"
    # Each training is announced before it starts: which model, how long, what comes out.
    headers = ["[1/4] Teacher: PooledCNN(width=16, hidden=64), 1 epoch on 992 glyphs of 16 fonts, with "
               "SemanticVectorCallback",
               "[2/4] Plain student: PooledCNN(width=8, hidden=32), 5 images per character, 1 epoch,",
               "[3/4] Static student: PooledCNN(width=8, hidden=32), 5 images per character, 1 epoch,",
               "[4/4] KD student: PooledCNN(width=8, hidden=32), 5 images per character, 1 epoch,"]
    positions = [out.index(h) for h in headers]
    assert positions == sorted(positions)
    assert out.index("teacher: test accuracy") < positions[1]
    assert out.index("plain student: test accuracy") < positions[2]
    assert out.index("KD student: test accuracy") > positions[3]
    accuracy = {name: 100 * acc for name, (acc, _) in result.students.items()}
    headline = (f"From the knowledge file alone, the student reaches {accuracy['static student']:.1f} % on the "
                f"6 unseen fonts, against {accuracy['plain student']:.1f} % trained alone and "
                f"{accuracy['KD student']:.1f} % with the teacher run on every batch")
    for text in (headline, "teacher (with callback)", "What the teacher's logit neurons learned",
                 "Vectors against the teacher's mistakes, all pairs: Spearman",
                 f"tensorboard --logdir {run}", f"written to {run}"):
        assert text in out
    assert set(result.students) == {"plain student", "static student", "KD student"}
    # The look-alike table lists the 15 pairs with the most similar logit vectors, in words.
    names = result.callback.class_names
    assert names is not None and len(names) == 62
    assert result.look_alikes is not None and result.look_alikes.pairs == 62 * 61 // 2
    for i, j in result.look_alikes.top_pairs.tolist():
        assert f"\n{names[i] + ' / ' + names[j]:<8}" in out
    assert result.confusion is not None and int(result.confusion.sum()) == 6 * 62
    assert result.knowledge_path == run / "demo.semvec.safetensors"
    assert result.report_path == run / "report" / "index.html" and result.report_path.is_file()
    # The report holds the logits against the teacher's held-out mistakes (demo passes confusion).
    page = result.report_path.read_text("utf-8")
    assert 'data-reference="confusion"' in page and "write_report(..., confusion=...)" not in page
    # Each logit neuron keeps its DEMO_TOP_INPUTS best inputs for its report card.
    top = StaticKnowledge.load(result.knowledge_path).statistics(LOGITS_LAYER)["top_inputs"]
    assert top.shape[:2] == (62, DEMO_TOP_INPUTS) and DEMO_TOP_INPUTS > 1
    for name in ("teacher", "plain_student", "static_student", "kd_student"):
        assert list((run / name).glob("events.out.tfevents.*")), name
    # A run shorter than the analysis cadence is still analysed once: the entry the projector
    # opens on has each neuron's class and thumbnail.
    log_dir = run / "teacher"
    opened = projector_open_order(read_projector_config(log_dir))[0]
    assert opened.is_latest and opened.sprite_path
    columns = read_embedding_metadata(log_dir, opened)
    assert all(columns["label"])
    assert all(c for c, d in zip(columns["preferred_class"], columns["dead"]) if d == "alive")
    first_run = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    # A second run writes version_1 and leaves the first run's files as they were.
    again = main(epochs=1, out_dir=str(tmp_path / "runs"), progress_bar=False, student_epochs=1)
    assert again.knowledge_path == tmp_path / "runs" / "version_1" / "demo.semvec.safetensors"
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == first_run


def test_the_demo_restores_the_callers_thread_count(small_glyphs, tmp_path, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(demo, "_run", lambda *args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(out_dir=str(tmp_path / "runs"))
        assert seen == [1]  # never more than the caller allowed
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


def test_a_student_validates_every_student_val_every_epochs(small_glyphs, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(demo, "STUDENT_VAL_EVERY", 2)
    demo.train_student("plain student", tmp_path / "unused.semvec.safetensors", tmp_path, epochs=4,
                       progress_bar=False)
    events = EventAccumulator(str(tmp_path / "plain_student"))
    events.Reload()
    # Epochs 2 and 4 of 4: two validation points, not four.
    assert len(events.Scalars("val/acc")) == 2
