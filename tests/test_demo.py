from lightning_semvec.demo import main
from lightning_semvec.projector import (
    projector_open_order,
    read_embedding_metadata,
    read_projector_config,
)


def test_demo_runs_end_to_end_and_prints_its_table(tmp_path, capsys):
    result = main(epochs=1, out_dir=str(tmp_path), progress_bar=False, student_epochs=1)
    out = capsys.readouterr().out
    for text in ("teacher (with callback)", "plain student", "static student",
                 "most similar neurons", f"tensorboard --logdir {tmp_path}"):
        assert text in out
    assert set(result.students) == {"plain student", "static student"}
    assert result.knowledge_path.is_file()
    assert list((tmp_path / "demo" / "version_0").glob("events.out.tfevents.*"))
    # A run shorter than the analysis cadence is still analysed once: the entry the projector
    # opens on has each neuron's class and thumbnail.
    log_dir = tmp_path / "demo" / "version_0"
    opened = projector_open_order(read_projector_config(log_dir))[0]
    assert opened.is_latest and opened.sprite_path
    columns = read_embedding_metadata(log_dir, opened)
    assert all(columns["preferred_class"]) and all(columns["label"])
