
from lightning_semvec.cli.demo import main
from lightning_semvec.projector import (
    projector_open_order,
    read_embedding_metadata,
    read_projector_config,
)


def test_demo_runs_end_to_end_announces_each_stage_and_never_overwrites(tmp_path, capsys):
    result = main(epochs=1, out_dir=str(tmp_path), progress_bar=False, student_epochs=1)
    out = capsys.readouterr().out
    run = tmp_path / "version_0"
    # Each training is announced before it starts: which model, how long, what comes out.
    headers = ["[1/3] Teacher: SmallCNN(width=16, hidden=64), 1 epoch, with SemanticVectorCallback",
               "[2/3] Plain student: SmallCNN(width=4, hidden=16), 1 epoch, trained alone.",
               "[3/3] Static student: SmallCNN(width=4, hidden=16), 1 epoch, distilled from the "
               "knowledge file alone"]
    positions = [out.index(h) for h in headers]
    assert positions == sorted(positions)
    assert out.index("teacher: test accuracy") < positions[1]
    assert out.index("plain student: test accuracy") < positions[2]
    for text in ("teacher (with callback)", "plain student", "static student",
                 "most similar neurons", f"tensorboard --logdir {run}", f"written to {run}"):
        assert text in out
    assert set(result.students) == {"plain student", "static student"}
    assert result.knowledge_path == run / "demo.semvec.safetensors"
    assert result.report_path == run / "report" / "index.html" and result.report_path.is_file()
    for name in ("teacher", "plain_student", "static_student"):
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
    again = main(epochs=1, out_dir=str(tmp_path), progress_bar=False, student_epochs=1)
    assert again.knowledge_path == tmp_path / "version_1" / "demo.semvec.safetensors"
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == first_run
