from lightning_semvec.demo import main


def test_demo_runs_end_to_end_and_prints_its_table(tmp_path, capsys):
    result = main(epochs=1, out_dir=str(tmp_path), progress_bar=False, student_epochs=1)
    out = capsys.readouterr().out
    for text in ("teacher (with callback)", "plain student", "static student",
                 "most similar neurons", f"tensorboard --logdir {tmp_path}"):
        assert text in out
    assert set(result.students) == {"plain student", "static student"}
    assert result.knowledge_path.is_file()
    assert list((tmp_path / "demo" / "version_0").glob("events.out.tfevents.*"))
