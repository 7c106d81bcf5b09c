"""The documentation's code runs as written.

- Every ```python block of README.md (and of docs/index.md and docs/trained-model.md), run in order in one namespace in a
  fresh working directory, on the embedded digits: no substitution, the README itself uses
  tiny epochs.
- Every ```yaml block of docs/quickstart.md whose first line is ``# semvec fit`` or
  ``# semvec distill``: written to a file and run through ``lightning_semvec.cli._main.main`` with the
  run shrunk on the command line (``--trainer.max_epochs 1`` and two training batches).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` in ``path``, in order."""
    return [body for lang, body in FENCE.findall(path.read_text(encoding="utf-8"))
            if lang == language]


def run_blocks(blocks: list[str], where: str) -> dict:
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"<{where} python block {i + 1}>", "exec")
        exec(code, namespace)
    return namespace


def test_code_blocks_are_found():
    assert len(code_blocks(ROOT / "README.md", "python")) >= 2
    assert code_blocks(ROOT / "README.md", "bash")


@pytest.mark.timeout(300)
def test_readme_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(code_blocks(ROOT / "README.md", "python"), "README.md")
    # What the README says the first block leaves behind.
    vectors = namespace["semvec"].semantic_vectors
    assert vectors["net.features.0"].shape == (16, 8)
    assert vectors["net.classifier.3"].shape == (10, 8)
    assert (tmp_path / "teacher.semvec.safetensors").is_file()
    assert namespace["student"].trainer.current_epoch == 3


@pytest.mark.timeout(300)
def test_docs_index_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_blocks(code_blocks(ROOT / "docs" / "index.md", "python"), "docs/index.md")
    assert (tmp_path / "teacher.semvec.safetensors").is_file()


@pytest.mark.timeout(300)
def test_trained_model_guide_python_blocks_run(tmp_path, monkeypatch):
    """docs/trained-model.md: every ```python block, in order (the multi-GPU one is ```py)."""
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(code_blocks(ROOT / "docs" / "trained-model.md", "python"),
                           "docs/trained-model.md")
    assert (tmp_path / "posthoc.semvec.safetensors").is_file()
    assert namespace["knowledge"]["net.classifier.1"].vectors.shape == (64, 16)
    assert namespace["fidelity"] > namespace["best"] - 0.05
    # "Two models in one space"
    assert namespace["joint"].layer_names == ["teacher/net.classifier.1", "student/net.classifier.1"]
    assert "Matching: teacher → student" in (tmp_path / "joint_report" / "index.html").read_text()
    assert "joint:00000" in (tmp_path / "joint_projector" / "projector_config.pbtxt").read_text()


# The layer error's example pattern fits the model at hand (it used to say 'features.*' for every
# model, a name none of the package's models has: theirs start with 'net.').


def test_layer_error_example_matches_the_model():
    from torch import nn

    from lightning_semvec import SemvecError, resolve_layers
    from lightning_semvec.capture.layers import example_pattern
    from lightning_semvec.models import ImageClassifier, SmallCNN

    model = ImageClassifier(SmallCNN(in_channels=1, num_classes=10))
    with pytest.raises(SemvecError) as caught:
        resolve_layers(model, ["features.*"])
    suggested = re.search(r"glob patterns such as '([^']+)'", str(caught.value)).group(1)
    assert suggested == "net.features.*"
    assert list(resolve_layers(model, suggested)) == [f"net.features.{i}" for i in range(5)]

    with pytest.raises(SemvecError, match=re.escape("e.g. layers=['net.features.*']")):
        resolve_layers(model, [])

    # Whatever the model, the suggested pattern matches one of its layers.
    for net in (nn.Sequential(nn.Linear(4, 2)),
                nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 2)))):
        assert resolve_layers(net, example_pattern(net))


# The YAML examples of docs/quickstart.md, through the CLI at tiny size.

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1"]


def yaml_examples() -> dict[str, str]:
    """``{"fit": text, "distill": text}``: the quickstart's blocks headed ``# fit.yaml`` etc."""
    found = {}
    for block in code_blocks(ROOT / "docs" / "quickstart.md", "yaml"):
        head = re.match(r"# (fit|distill)\.yaml: semvec \1 --config \1\.yaml\n", block)
        if head:
            found[head.group(1)] = block
    return found


def test_yaml_examples_parse_to_what_they_say():
    import yaml

    examples = yaml_examples()
    assert set(examples) == {"fit", "distill"}
    fit, distill = (yaml.safe_load(examples[name]) for name in ("fit", "distill"))
    assert fit["semvec"]["layers"] == ["net.features.*", "net.classifier.3"]
    assert fit["knowledge"] == distill["model"]["knowledge"]


@pytest.mark.timeout(300)
def test_yaml_examples_run_fit_then_distill(tmp_path, monkeypatch, capsys):
    from lightning_semvec.cli._main import main
    from lightning_semvec.knowledge import StaticKnowledge

    monkeypatch.chdir(tmp_path)
    examples = yaml_examples()
    for name in ("fit", "distill"):
        (tmp_path / f"{name}.yaml").write_text(examples[name], encoding="utf-8")

    assert main(["fit", "--config", "fit.yaml", *TINY]) == 0
    knowledge = StaticKnowledge.load(tmp_path / "teacher.semvec.safetensors")
    assert "net.classifier.3" in knowledge.layers
    assert main(["distill", "--config", "distill.yaml", *TINY]) == 0
