import pytest

from lightning_semvec.demo import main, next_version_folder
from lightning_semvec.errors import SemvecValueError


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
    first_run = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    # A second run writes version_1 and leaves the first run's files as they were.
    again = main(epochs=1, out_dir=str(tmp_path), progress_bar=False, student_epochs=1)
    assert again.knowledge_path == tmp_path / "version_1" / "demo.semvec.safetensors"
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == first_run


def test_next_version_folder_follows_the_largest_and_skips_taken_names(tmp_path):
    assert next_version_folder(tmp_path / "new" / "runs") == tmp_path / "new" / "runs" / "version_0"
    (tmp_path / "version_3").mkdir()
    (tmp_path / "version_x").mkdir()
    (tmp_path / "version_4").write_text("a file, not a run")
    assert next_version_folder(tmp_path) == tmp_path / "version_5"
    assert next_version_folder(tmp_path) == tmp_path / "version_6"


def test_demo_into_a_file_is_a_clear_error_that_writes_nothing(tmp_path, capsys):
    target = tmp_path / "runs"
    target.write_text("not a folder")
    with pytest.raises(SemvecValueError, match=r"runs is a file, not a folder\. Pass --out"):
        main(epochs=1, out_dir=str(target / "sub"), progress_bar=False, student_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    assert "[1/3]" not in capsys.readouterr().out


def test_train_student_names_the_students_it_knows(tmp_path):
    from lightning_semvec.demo import train_student

    with pytest.raises(SemvecValueError, match=r"name must be one of \['plain student', "
                                               r"'static student'\], got 'teacher'"):
        train_student("teacher", tmp_path / "k.semvec.safetensors", tmp_path)
    assert not any(tmp_path.iterdir())
