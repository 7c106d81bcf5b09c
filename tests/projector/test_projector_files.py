"""The projector files: TensorBoard's format, the config merge, reading back, fsspec log dirs."""

import fsspec
import numpy as np
import pytest
import torch

from lightning_semvec.errors import (
    SemvecFileNotFoundError,
    SemvecTypeError,
    SemvecValueError,
)
from lightning_semvec.projector import (
    EmbeddingEntry,
    neuron_metadata,
    read_embedding_metadata,
    read_embedding_tensor,
    read_projector_config,
    write_embedding,
)


def test_write_embedding_files_follow_tensorboards_format(tmp_path):
    from PIL import Image

    vectors = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    sprite = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    metadata = {"layer": ["fc"] * 5, "neuron": np.arange(5), "score": np.linspace(0, 1, 5),
                "note": ["a\tb", "c\nd", "e", "f", "g"]}
    entry = write_embedding(tmp_path, "net/fc", vectors, 7, metadata, sprite)

    assert entry.tensor_name == "net/fc:00007" and entry.tag == "net/fc" and entry.step == 7
    folder = tmp_path / "00007" / "net%2ffc"  # slashes escaped as add_embedding does
    assert entry.tensor_path == "00007/net%2ffc/tensors.tsv"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.tsv", "sprite.png", "tensors.tsv"]
    np.testing.assert_allclose(read_embedding_tensor(tmp_path, entry), vectors.numpy(), rtol=1e-6)
    lines = (folder / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "layer\tneuron\tscore\tnote" and len(lines) == 6
    assert lines[2] == "fc\t1\t0.25\tc d"  # tabs and newlines inside values cannot break rows
    assert read_embedding_metadata(tmp_path, entry)["note"][0] == "a b"
    image = np.asarray(Image.open(folder / "sprite.png"))
    assert image.shape == (18, 18, 3) and entry.sprite_dim == (6, 6)  # 3x3 grid of 6x6
    assert np.array_equal(image[6:12, 0:6], sprite[3].permute(1, 2, 0).numpy())
    (listed,) = read_projector_config(tmp_path)
    assert listed == entry and listed.tensor_shape == (5, 3)
    # The config is replaced through a file beside it, renamed: nothing else is left there.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00007", "projector_config.pbtxt"]


def test_single_metadata_column_has_no_header(tmp_path):
    entry = write_embedding(tmp_path, "fc", torch.zeros(3, 2), metadata={"label": ["x", "y", "z"]})
    assert (tmp_path / entry.metadata_path).read_text() == "x\ny\nz\n"


def test_config_is_merged_not_overwritten_and_same_name_replaced(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)  # an entry from TensorBoard's own add_embedding
    writer.add_embedding(torch.zeros(4, 2), metadata=list("abcd"), tag="old", global_step=1)
    writer.close()
    write_embedding(tmp_path, "fc", torch.zeros(3, 2), 2)
    write_embedding(tmp_path, "fc", torch.ones(3, 2), 2)  # rewritten: replaces, no duplicate
    write_embedding(tmp_path, "fc", torch.ones(3, 2), 3)
    entries = read_projector_config(tmp_path)
    assert [e.tensor_name for e in entries] == ["old:00001", "fc:00002", "fc:00003"]
    assert read_embedding_tensor(tmp_path, entries[1]).tolist() == [[1.0, 1.0]] * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vectors=torch.zeros(3)), r"vectors must be \(N, d\)"),
        (dict(metadata={"a": [1, 2]}), "one value per point"),
        (dict(sprite_images=torch.zeros(3, 2, 4, 4)), "sprite_images"),
        (dict(sprite_images=torch.zeros(3, 1, 4097, 4097, dtype=torch.uint8)), "8192"),
        (dict(global_step=-1), "global_step must be an integer >= 0, got -1"),
        (dict(global_step=True), "global_step must be an integer >= 0, got True"),
        (dict(tag=""), "tag must be a non-empty string"),
        (dict(tag=3), "tag must be a non-empty string not starting with .*, got 3"),
        (dict(tag="(latest) fc"), r"not starting with '\(latest\) ', got '\(latest\) fc'"),
        (dict(vectors=torch.zeros(100_001, 2), metadata=None),
         "vectors has 100,001 rows, but TensorBoard's projector shows at most 100,000 points"),
    ],
)
def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path, kwargs, match):
    arguments = dict(tag="fc", vectors=torch.zeros(3, 2), global_step=0,
                     metadata={"a": [1, 2, 3]}) | kwargs
    with pytest.raises(SemvecValueError, match=match):
        write_embedding(tmp_path / "run", **arguments)
    assert not (tmp_path / "run").exists()


def test_a_broken_config_is_a_clear_error_before_anything_is_written(tmp_path):
    (tmp_path / "projector_config.pbtxt").write_text("embeddings { nonsense")
    with pytest.raises(ValueError, match="not a valid projector config.*fix or remove it"):
        read_projector_config(tmp_path)
    with pytest.raises(SemvecValueError, match="not a valid projector config"):
        write_embedding(tmp_path, "fc", torch.zeros(3, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["projector_config.pbtxt"]


def test_a_file_the_config_lists_but_that_is_gone_is_a_clear_error(tmp_path):
    entry = write_embedding(tmp_path, "fc", torch.zeros(3, 2), metadata={"a": [1, 2, 3]})
    (tmp_path / entry.tensor_path).unlink()
    with pytest.raises(SemvecFileNotFoundError, match="tensors.tsv' does not exist"):
        read_embedding_tensor(tmp_path, entry)
    assert read_embedding_metadata(tmp_path, entry) == {"label": ["1", "2", "3"]}
    assert read_embedding_metadata(tmp_path, EmbeddingEntry("fc:00000", entry.tensor_path)) == {}


def test_fsspec_log_dir_is_written_and_read_back():
    # memory:// is a real fsspec filesystem: what works there works on s3:// with s3fs installed.
    run = "memory://semvec-tests/run/version_0"
    vectors = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    metadata = neuron_metadata("fc", 4)
    sprite = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    first = write_embedding(run, "fc", vectors, 3, metadata, sprite)
    write_embedding(run, "fc", vectors * 2, 4)

    memory = fsspec.filesystem("memory")
    assert memory.isfile("/semvec-tests/run/version_0/00003/fc/sprite.png")
    assert [e.tensor_name for e in read_projector_config(run)] == ["fc:00003", "fc:00004"]
    np.testing.assert_allclose(read_embedding_tensor(run, first), vectors.numpy(), rtol=1e-6)
    assert read_embedding_metadata(run, first)["neuron"] == ["0", "1", "2", "3"]
    assert first.sprite_dim == (5, 5)
    memory.rm("/semvec-tests", recursive=True)


@pytest.mark.parametrize(
    "log_dir, match",
    [
        ("nosuchfs://bucket/run", "fsspec has no usable filesystem for 'nosuchfs'"),
        ("s3://bucket/run", "fsspec has no usable filesystem for 's3'.*s3fs"),
    ],
)
def test_a_log_dir_whose_filesystem_is_missing_is_a_clear_error(tmp_path, monkeypatch, log_dir,
                                                                 match):
    if log_dir.startswith("s3://"):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("s3fs is installed: s3:// log directories work")
    monkeypatch.chdir(tmp_path)  # a path-based writer would create "s3:/bucket/run" here
    with pytest.raises(SemvecValueError, match=match):
        write_embedding(log_dir, "fc", torch.zeros(3, 2))
    with pytest.raises(SemvecValueError, match=match):
        read_projector_config(log_dir)
    assert not list(tmp_path.iterdir())


def test_a_log_dir_that_is_not_a_path_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is the working directory: nothing may land there
    with pytest.raises(SemvecValueError, match="log_dir must not be empty"):
        write_embedding("", "fc", torch.zeros(3, 2))
    with pytest.raises(SemvecTypeError, match="log_dir must be a path or URL string.*got int"):
        write_embedding(3, "fc", torch.zeros(3, 2))
    assert not list(tmp_path.iterdir())


def test_neuron_metadata_shapes_and_sizes_are_checked():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        neuron_metadata("fc", 3, {"mean_activation": torch.zeros(4)})
    with pytest.raises(SemvecValueError, match="num_neurons must be an integer >= 1, got 0"):
        neuron_metadata("fc", 0)


def test_a_full_disk_while_rewriting_an_embedding_leaves_the_old_one_whole(tmp_path, monkeypatch):
    """The tensors, metadata, sprite and config are written whole beside their targets before any
    is renamed into place: before, a full disk truncated tensors.tsv under a config that still
    listed the old shape ("columns changed from 8 to 7 at row 504")."""
    from lightning_semvec.projector import storage

    old = torch.arange(15.0).reshape(5, 3)
    write_embedding(tmp_path, "fc", old, metadata={"neuron": list(range(5))})
    real_open, written = open, []

    def filling_up(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "x" in mode:
            written.append(path)
            if len(written) == 2:  # the disk fills up while the second file is written
                handle.close()
                raise OSError(28, "No space left on device")
        return handle

    monkeypatch.setattr(storage, "open", filling_up, raising=False)
    with pytest.raises(OSError, match="No space left"):
        write_embedding(tmp_path, "fc", torch.ones(7, 2), metadata={"neuron": list(range(7))})
    monkeypatch.undo()
    (entry,) = read_projector_config(tmp_path)
    assert entry.tensor_shape == (5, 3)
    np.testing.assert_array_equal(read_embedding_tensor(tmp_path, entry), old.numpy())
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")) == []
    # The next write goes through whole.
    write_embedding(tmp_path, "fc", torch.ones(7, 2), metadata={"neuron": list(range(7))})
    assert read_projector_config(tmp_path)[0].tensor_shape == (7, 2)
