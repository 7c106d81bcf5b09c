"""The real reader: the installed TensorBoard serves every layer, neuron, metadata column and
bookmark.

A small run is written by the callback, then ``python -m tensorboard.main`` is started on
127.0.0.1 and its projector plugin is asked over HTTP what the Embedding Projector would load.
"""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.projector import (
    METADATA_COLUMNS,
    EmbeddingEntry,
    projector_open_order,
    read_projector_config,
)

LAYERS = {"features.1": 4, "features.3": 6, "classifier.2": 3}
STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, route: str, **params: str) -> bytes:
    url = f"http://127.0.0.1:{port}/data/plugin/projector/{route}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture()
def run_dir(tmp_path):
    semvec = SemanticVectorCallback(layers=list(LAYERS), dim=3, analysis=AnalysisOptions(
        figures=False, class_names=["top-left", "top-right", "bottom-left"]))
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=TensorBoardLogger(tmp_path, name="run"), limit_val_batches=None, max_epochs=2))
    trainer.fit(TinyConvNet())
    return tmp_path, semvec


def test_tensorboard_projector_plugin_serves_every_layer_neuron_and_column(run_dir, tmp_path):
    logdir, semvec = run_dir
    run = "run/version_0"
    written = read_projector_config(logdir / run)
    assert {e.tag for e in written} == set(LAYERS) and {e.step for e in written} == {6, 12}

    port = free_port()
    server_log = open(tmp_path / "tensorboard.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=server_log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        runs: list[str] = []
        while run not in runs:
            if server.poll() is not None:
                log = (tmp_path / "tensorboard.log").read_text()
                pytest.fail(f"TensorBoard exited early:\n{log}")
            if time.monotonic() > deadline:
                pytest.fail(f"TensorBoard did not list the run in {STARTUP_SECONDS} s; runs={runs}")
            try:
                runs = json.loads(get(port, "runs"))
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)

        info = json.loads(get(port, "info", run=run))
        served = {e["tensorName"]: e for e in info["embeddings"]}
        assert set(served) == {e.tensor_name for e in written}
        # The projector opens the first entry in its menu's order, computed from what the
        # server says: the latest step of the widest layer, under its "(latest)" name.
        menu = projector_open_order(
            EmbeddingEntry(name, e["tensorPath"], tuple(int(s) for s in e["tensorShape"]),
                           e.get("metadataPath", ""))
            for name, e in served.items())
        assert menu[0].tensor_name == "(latest) features.3:00012"
        vectors = semvec.semantic_vectors
        for entry in written:
            n = LAYERS[entry.tag]
            assert [int(s) for s in served[entry.tensor_name]["tensorShape"]] == [n, 3]
            assert served[entry.tensor_name]["sprite"]["singleImageDim"] == [32, 32]

            raw = get(port, "tensor", run=run, name=entry.tensor_name)
            tensor = np.frombuffer(raw, dtype=np.float32).reshape(n, 3)
            if entry.step == 12:  # the last step: the callback's final vectors
                np.testing.assert_allclose(tensor, vectors[entry.tag].numpy(), rtol=1e-6, atol=1e-7)

            lines = get(port, "metadata", run=run, name=entry.tensor_name).decode().splitlines()
            assert lines[0].split("\t") == list(METADATA_COLUMNS)
            rows = [line.split("\t") for line in lines[1:]]
            assert len(rows) == n and all(len(row) == len(METADATA_COLUMNS) for row in rows)
            col = {name: [row[i] for row in rows] for i, name in enumerate(METADATA_COLUMNS)}
            assert col["neuron"] == [str(i) for i in range(n)]
            assert col["layer"] == [entry.tag] * n
            assert all(label.startswith(f"{entry.tag} #{i}:") for i, label in
                       enumerate(col["label"]))
            alive = [c for c, d in zip(col["preferred_class"], col["dead"]) if d == "alive"]
            assert alive and set(alive) <= {"top-left", "top-right", "bottom-left"}
            ids = dict(zip(col["preferred_class_id"], col["dead"]))
            assert all(i in {"0", "1", "2"} if d == "alive" else i == "-1"
                       for i, d in zip(col["preferred_class_id"], col["dead"])), ids
            assert all(col["selectivity"]) and all(col["mean_activation"])
            assert set(col["dead"]) <= {"alive", "dead"}

            sprite = get(port, "sprite_image", run=run, name=entry.tensor_name)
            assert sprite.startswith(b"\x89PNG")
            # The Bookmarks panel's one view: colour by a column the server serves.
            bookmarks = json.loads(get(port, "bookmarks", run=run, name=entry.tensor_name))
            assert [b["selectedColorOptionName"] for b in bookmarks] == ["preferred_class"]
            assert bookmarks[0]["selectedColorOptionName"] in col
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        server_log.close()
