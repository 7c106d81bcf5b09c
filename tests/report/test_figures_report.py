"""Figures (clustered heatmaps, PCA map), their logging to TensorBoard, and the HTML report."""

import html

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.analysis.figures import (
    CARD_WIDTH_PX,
    MAX_LEGEND_CLASSES,
    MAX_TICK_LABELS,
    cluster_order,
    pca_2d,
    pca_map,
    similarity_heatmaps,
)
from lightning_semvec.cli import main as semvec
from lightning_semvec.functional import semantic_similarity
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.report import nearest_neighbours, write_report
from lightning_semvec.report._layer_order import rank_layers

CLASSES = ["top-left", "top-right", "bottom-left"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short run with the TensorBoard logger, its knowledge file and log folder."""
    tmp = tmp_path_factory.mktemp("run")
    semvec = SemanticVectorCallback(layers=["features.3", "classifier.2"], dim=3, lr=0.1,
                                    analysis=AnalysisOptions(class_names=CLASSES))
    pl.seed_everything(0, verbose=False)
    logger = TensorBoardLogger(tmp, name="run")
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=2))
    trainer.fit(TinyConvNet())
    knowledge = semvec.export_knowledge(tmp / "tiny.semvec.safetensors")
    return tmp, logger.log_dir, knowledge, semvec


def block_similarity(sizes, seed=0):
    """Block-diagonal similarity of unit vectors, neurons shuffled; returns (S, block id)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(len(sizes))
    labels = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    vectors = centres[labels] + 0.05 * torch.randn(len(labels), len(sizes), generator=g)
    perm = torch.randperm(len(labels), generator=g)
    return semantic_similarity(vectors[perm]), labels[perm]


def test_cluster_order_puts_each_block_together():
    s, labels = block_similarity([4, 6, 5])
    order = cluster_order(s)
    assert sorted(order.tolist()) == list(range(15))
    runs = labels[order]
    assert int((runs[1:] != runs[:-1]).sum()) == 2  # three contiguous blocks


def test_heatmaps_side_by_side_share_the_order():
    s, _ = block_similarity([3, 3])
    figure = similarity_heatmaps(s, -s, title="layer")
    heatmaps = [ax for ax in figure.axes if ax.images and ax.get_title()]
    assert [ax.get_title() for ax in heatmaps] == ["semantic similarity", "activation similarity"]
    assert heatmaps[0].get_xlabel() == "6 neurons, clustered"
    order = cluster_order(s)
    shown = [ax.images[0].get_array() for ax in heatmaps]
    np.testing.assert_allclose(shown[0], s[order][:, order].numpy(), atol=1e-6)
    np.testing.assert_allclose(shown[1], -shown[0], atol=1e-6)
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == [str(i) for i in order.tolist()]
    alone = similarity_heatmaps(s)
    assert len([ax for ax in alone.axes if ax.images and ax.get_title()]) == 1
    with pytest.raises(ValueError, match="activation must have the shape"):
        similarity_heatmaps(s, s[:3, :3])


def test_pca_map_colours_by_preferred_class_and_marks_dead():
    vectors = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    figure = pca_map(vectors, torch.tensor([0, 1, 2] * 3), CLASSES, torch.arange(9) == 4)
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == [*CLASSES, "dead"]
    # Without statistics nothing tells alive from dead: no legend, no "alive".
    assert pca_map(vectors).axes[0].get_legend() is None
    only_dead = pca_map(vectors, dead=torch.arange(9) == 4).axes[0].get_legend()
    assert [t.get_text() for t in only_dead.get_texts()] == ["alive", "dead"]
    with pytest.raises(ValueError, match="preferred_class"):
        pca_map(vectors, torch.zeros(3, dtype=torch.long))


def _texts(figure):
    """Every visible text of a drawn figure: (string, font size in points)."""
    from matplotlib.text import Text

    figure.canvas.draw()
    return [(t.get_text(), t.get_fontsize()) for t in figure.findobj(Text)
            if t.get_visible() and t.get_text()]


@pytest.mark.parametrize("draw", ["heatmaps", "one heatmap", "pca", "pca of 62 classes"])
def test_figures_are_sized_for_tensorboard_cards(draw):
    """TensorBoard scales an image to its card, 350 to 500 pixels wide: a figure at most
    CARD_WIDTH_PX wide keeps 9-point text at 5 pixels a point or more, and a heatmap of 32
    neurons labels at most MAX_TICK_LABELS of them per axis."""
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(62 if "62" in draw else 32, 6, generator=g)
    s = semantic_similarity(vectors)
    figure = {
        "heatmaps": lambda: similarity_heatmaps(s, s, title="net.features.2: step 40"),
        "one heatmap": lambda: similarity_heatmaps(s, title="net.features.2"),
        "pca": lambda: pca_map(vectors, torch.arange(32) % 10, [f"c{i}" for i in range(10)],
                               title="net.features.2: PCA"),
        "pca of 62 classes": lambda: pca_map(vectors, torch.arange(62),
                                             [chr(ord("A") + i) for i in range(62)]),
    }[draw]()
    width, height = figure.get_size_inches() * figure.dpi
    assert 300 <= width <= CARD_WIDTH_PX and height <= 450
    texts = _texts(figure)
    assert min(size for _, size in texts) >= 9
    if draw.endswith("heatmaps") or draw == "one heatmap":
        for ax in figure.axes[:-1]:  # the last axes is the colour bar
            assert 0 < len(ax.get_xticklabels()) <= MAX_TICK_LABELS
            assert len(ax.get_xticks()) <= MAX_TICK_LABELS


def test_pca_map_of_many_classes_labels_the_points_with_their_class():
    """More classes than a legend lists readably: no legend, each point says its class."""
    vectors = torch.randn(40, 4, generator=torch.Generator().manual_seed(2))
    names = [f"k{i}" for i in range(40)]
    figure = pca_map(vectors, torch.arange(40), names, torch.arange(40) == 3)
    assert figure.axes[0].get_legend() is None
    annotations = {t.get_text() for t in figure.axes[0].texts}
    assert annotations == {*names[:3], *names[4:]}  # the dead neuron (a cross) has no label
    few = pca_map(vectors, torch.arange(40) % MAX_LEGEND_CLASSES, names)
    assert len(few.axes[0].get_legend().get_texts()) == MAX_LEGEND_CLASSES
    assert {t.get_text() for t in few.axes[0].texts} == {str(i) for i in range(40)}


def test_pca_2d_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    vectors = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    ours = pca_2d(vectors).numpy()
    unit = torch.nn.functional.normalize(vectors, dim=1).numpy()
    theirs = PCA(n_components=2, svd_solver="full").fit_transform(unit)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-5)
    assert evenly_spaced(1000, 10).tolist()[-1] == 999


def _figure_steps(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"images": 0})
    events.Reload()
    return events, {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}


def test_callback_logs_figures_to_tensorboard_once_at_the_end(run):
    _, log_dir, _, _ = run
    events, steps = _figure_steps(log_dir)
    # Default figures="end": drawn once, at the end of fit (step 12), not at epoch 1 (step 6).
    assert steps == {f"semvec/{layer}/{kind}": [12] for layer in ("features.3", "classifier.2")
                     for kind in ("similarity", "pca")}
    first = events.Images("semvec/classifier.2/similarity")[0]
    # Two panels: the activation similarity of the last analysed epoch is beside the vectors',
    # in an image no wider than TensorBoard's cards show without shrinking its text away.
    assert 1.5 * first.height < first.width <= CARD_WIDTH_PX
    assert first.encoded_image_string.startswith(b"\x89PNG")


@pytest.mark.parametrize(("figures", "expected"), [("epoch", [6, 12]), (False, None)])
def test_figures_at_every_analysed_epoch_or_none(tmp_path, figures, expected):
    semvec = SemanticVectorCallback(layers=["classifier.2"], dim=3, analysis=AnalysisOptions(
        figures=figures, projector=False))
    pl.seed_everything(0, verbose=False)
    logger = TensorBoardLogger(tmp_path, name="run")
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=logger, limit_val_batches=None, max_epochs=2))
    trainer.fit(TinyConvNet())
    _, steps = _figure_steps(logger.log_dir)
    if expected is None:
        assert steps == {}
    else:
        assert steps == {"semvec/classifier.2/similarity": expected, "semvec/classifier.2/pca": expected}


def test_figures_option_rejects_an_unknown_schedule():
    with pytest.raises(ValueError, match=r"Unknown figures 'always': use one of 'end', 'epoch'"):
        AnalysisOptions(figures="always")


def test_report_shows_the_statistics_the_knowledge_file_carries(run, tmp_path):
    _tmp, log_dir, knowledge_path, semvec = run
    # No log folder: the statistics travel in the knowledge file.
    index = write_report(knowledge_path, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    knowledge = StaticKnowledge.load(knowledge_path)
    first, second = (s.slug for s in rank_layers(knowledge))
    names = sorted(p.name for p in index.parent.iterdir())
    # The telling layer has cards (and its map inline), the other a PCA figure and a table.
    assert names == sorted([f"{first}_similarity.png", f"{second}_similarity.png",
                            f"{second}_pca.png", "index.html"])
    page = index.read_text()
    assert "preferred class" in page and "selectivity" in page
    stats = semvec.neuron_statistics["classifier.2"]
    # classifier.2 is the logits (3 neurons, 3 classes): named by class wherever it shows.
    if first.endswith("classifier.2"):
        for neuron, name in enumerate(CLASSES):
            assert f'<article id="n-{first}-{neuron}" class="card"><h4><span class="chip">{html.escape(name)}' in page
    else:
        for neuron, cls in enumerate(stats["preferred_class"].tolist()):
            assert f"<tr><td>{neuron}</td><td>{html.escape(CLASSES[cls])}</td>" in page
    dead = knowledge.statistics("features.3")["dead"]
    assert dead.shape == (6,) and torch.equal(dead, semvec.neuron_statistics["features.3"]["dead"])
    with pytest.warns(FutureWarning, match=r"log_dir=\.\.\.\) is deprecated"):
        write_report(knowledge_path, tmp_path / "again", log_dir=log_dir)


def test_report_without_statistics_lists_norms_and_neighbours(tmp_path):
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [0.1, 0.9]])
    path = StaticKnowledge.from_vectors({"fc": vectors}).save(tmp_path / "k.semvec.safetensors")
    page = write_report(path, tmp_path / "out", card_layers=0).read_text()
    assert "preferred class" not in page and "No validation statistics" in page
    assert '<tr><td>0</td><td class="num">1.00</td><td>1 (+0.98)' in page  # norm 1, neuron 1


def test_report_rounds_blanks_what_is_undefined_and_ranks_the_layers(tmp_path):
    """Dead neurons have no preferred class, selectivity or neighbours; a selectivity outside
    [0, 1] (from a file exported before the index was defined for signed activations) is left
    empty with a note; numbers are rounded; "About this file" ranks and links every layer."""
    stats = {
        "mean_activation": torch.tensor([0.0474152, -1.23456, 0.5]),
        "dead": torch.tensor([False, False, True]),
        "selectivity": torch.tensor([0.0474152, 1.8, 0.0]),
        "preferred_class": torch.tensor([1, 0, 0]),
    }
    vectors = {"conv": torch.eye(3) + 0.1, "logits": torch.eye(3)[:, :2] + 0.2}
    path = StaticKnowledge.from_vectors(
        vectors, statistics={"logits": stats}, class_names=["a", "b", "c"]
    ).save(tmp_path / "k.semvec.safetensors")
    page = write_report(path, tmp_path / "out", card_layers=0).read_text()
    rows = [line for line in page.splitlines() if line.startswith("<tr><td>")]
    # The logits rank first (they have a selectivity, conv nothing); its dead neuron 2 is no row.
    logits = rows[:2]
    assert logits[0].startswith('<tr><td>0</td><td>b</td><td class="num">0.05</td>'
                                '<td class="num">0.047</td>')
    assert logits[1].startswith('<tr><td>1</td><td>a</td><td class="num"></td>'
                                '<td class="num">-1.235</td>')
    # The logits' neurons are the classes a, b, c; the dead c is nobody's neighbour.
    assert logits[0].endswith("<td>b (+0.32)</td></tr>") and logits[1].endswith("<td>a (+0.32)</td></tr>")
    assert "so not a column: vector norm 1.22." in page  # the same for both alive neurons
    assert "Dead (constant on the validation data; no preferred class, selectivity or neighbours), not listed: 2." in page
    assert "0.0474152" not in page and "1.8" not in page
    assert "1 selectivity values of this file lie outside [0, 1]" in page
    assert page.count("shifted up by their minimum") == 1  # once, in "About this file"
    about = page[page.index('<section id="about">'):]
    assert about.index('href="#01_logits"') < about.index('href="#00_conv"')
    assert '<a href="#01_logits">logits</a></td><td class="num">3</td><td class="num">1</td>' in about
    assert '<a href="#00_conv">conv</a></td><td class="num">3</td><td class="num"></td>' in about
    assert '<section id="00_conv" class="layer">' in page and '<section id="01_logits" class="layer">' in page


def test_report_main(tmp_path, capsys):
    def main(argv):
        return semvec(["report", *argv])

    knowledge = StaticKnowledge.from_vectors({"fc": torch.eye(3)})
    path = knowledge.save(tmp_path / "k.semvec.safetensors")
    assert main([str(path), str(tmp_path / "out")]) == 0
    assert "index.html" in capsys.readouterr().out
    # The exit status of `semvec report`: 2 for input that cannot be read.
    assert main([str(tmp_path / "missing.semvec.safetensors"), str(tmp_path / "out")]) == 2
    assert "semvec report: error: Knowledge file" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04junk")
    assert main([str(tmp_path / "bad.safetensors"), str(tmp_path / "out")]) == 2
    assert "not a safetensors knowledge file" in capsys.readouterr().err


def test_nearest_neighbours_in_chunks_equal_the_dense_answer():
    vectors = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    s = semantic_similarity(vectors).fill_diagonal_(-2.0)
    idx, sim = nearest_neighbours(vectors, k=3, chunk=7)
    dense = s.topk(3, dim=1)
    assert torch.equal(idx, dense.indices)
    torch.testing.assert_close(sim, dense.values)
    first, _ = nearest_neighbours(vectors, k=3, chunk=7, rows=10)
    assert torch.equal(first, idx[:10])
