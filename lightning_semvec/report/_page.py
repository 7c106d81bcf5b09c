"""The report's page: what the network learned first, the facts of the file last.

Its parts, top to bottom: the lead (:func:`lead_section`: the most telling layer's neurons
on a map of their vectors and, in words, which neurons are alike), the neuron cards, the other
layers, the Matching sections of a joint file, and "About this file" (:func:`about_section`:
metadata, the layers' ranking and its rule, what selectivity means). :func:`page` wraps them
with the style sheet.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.report._agreement import AGREEMENT_RULE
from lightning_semvec.report._cards import card_anchor, card_order
from lightning_semvec.report._layer_order import RANKING_RULE, LayerScore
from lightning_semvec.report._map import class_colour, neuron_map_svg
from lightning_semvec.report._neighbours import nearest_neighbours
from lightning_semvec.report._tables import SELECTIVITY_NOTE, layer_summary

__all__ = ["about_section", "lead_section", "page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1em 2em 3em; color: #222; }
h1 { font-size: 1.7em; margin: 0 0 0.2em; }
h2 { margin: 0.4em 0; }
p.lede { margin: 0.2em 0 0.5em; max-width: 82em; }
nav.jump { font-size: 0.85em; margin-bottom: 0.6em; color: #555; }
nav.jump a { margin-right: 0.6em; }
.lead { display: flex; gap: 1.5em; align-items: flex-start; }
.lead .left { flex: none; width: 620px; }
.lead figure { margin: 0; }
div.explain { margin-top: 0.6em; font-size: 0.88em; line-height: 1.4; }
div.explain h3 { font-size: 1.05em; margin: 0 0 0.3em; }
div.explain ul.others { margin: 0.3em 0 0; padding-left: 1.2em; }
p.explain { margin: 0.3em 0; max-width: 60em; }
section p.explain { font-size: 0.9em; background: #f6f8fb; border-left: 3px solid #2b6cb0;
                    padding: 0.3em 0.6em; }
.lead figcaption, p.small { font-size: 0.8em; color: #555; max-width: 620px; margin: 0.2em 0; }
.words { flex: 1; min-width: 20em; }
.words h2 { font-size: 1.15em; }
.words ul { list-style: none; padding: 0; margin: 0; font-size: 0.95em; line-height: 1.65; }
.words ul.many { columns: 2; column-gap: 2em; font-size: 0.88em; line-height: 1.5; }
.words li { break-inside: avoid; }
.chip { font-family: ui-monospace, monospace; background: #eef2f7; border-radius: 3px;
        padding: 0 0.3em; font-weight: 600; }
.sim { color: #888; font-size: 0.8em; font-variant-numeric: tabular-nums; }
svg.map a:hover text { font-weight: bold; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr));
         gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.7em; }
.card:target { outline: 2px solid #2b6cb0; }
.card.dead { color: #888; background: #fafafa; }
.card h4 { margin: 0 0 0.2em; font-size: 1.1em; font-weight: 500; }
.card .sub { color: #777; font-size: 0.8em; margin-left: 0.4em; }
.card p { margin: 0.2em 0; font-size: 0.85em; }
.card p.facts { color: #555; }
.thumbs img { width: 52px; height: 52px; image-rendering: pixelated; margin: 0 3px 3px 0;
              border: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
thead th { background: #f0f0f0; position: sticky; top: 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; }
img { max-width: 100%; }
section { margin-top: 2.5em; }
a.top { font-size: 0.5em; font-weight: normal; margin-left: 1em; }
p.note { font-size: 0.85em; color: #555; max-width: 60em; }
"""


def _chip(text: str) -> str:
    return f'<span class="chip">{html.escape(text)}</span>'


def _named(i: int, long: Sequence[str], aligned: bool) -> str:
    """A neuron's name in a sentence: a class chip, or ``neuron 12 (prefers <chip>)``."""
    if aligned:
        return _chip(long[i])
    head, sep, tail = long[i].partition(" (prefers ")
    return html.escape(head) + (f" (prefers {_chip(tail[:-1])})" if sep else "")


def _near(i: int, short: Sequence[str], aligned: bool) -> str:
    """A neighbour's name in a list: a class chip, or ``12 (<chip>)`` of ``"12:e"``."""
    if aligned:
        return _chip(short[i])
    index, sep, name = short[i].partition(":")
    return html.escape(index) + (f" ({_chip(name)})" if sep else "")


def lead_section(
    knowledge: StaticKnowledge,
    knowledge_path: Path,
    score: LayerScore,
    stats: dict[str, Tensor],
    names: tuple[Sequence[str], Sequence[str]],
    aligned: bool,
    *,
    neighbours: int,
    max_listed: int,
    carded: set[int],
    explained: str = "",
    nav: str = "",
) -> str:
    """The first screen: a sentence on the file and its most telling layer, the map of that
    layer's neurons by their vectors and, in words, each neuron's nearest neurons.

    Args:
        knowledge, knowledge_path: the file.
        score: the most telling layer (:func:`~lightning_semvec.report._layer_order.rank_layers`).
        stats: its statistics.
        names: ``(long, short)`` names of its neurons.
        aligned: whether its neuron ``i`` is class ``i``.
        neighbours: neighbours named per neuron.
        max_listed: the most neurons named in the list (those with cards first).
        carded: neurons that have a card (their map points link to it).
        explained: how far the vectors explain what the network does (HTML,
            :func:`~lightning_semvec.report._agreement.explanation_block`), under the map.
        nav: the page's jump links, under the heading.
    """
    vectors = knowledge.vectors(score.name)
    n = vectors.shape[0]
    long, short = names
    class_names = knowledge.class_names or []
    dead = stats["dead"].tolist() if "dead" in stats else [False] * n
    alive = ~stats["dead"] if "dead" in stats else None
    idx, sim = nearest_neighbours(vectors, neighbours, alive=alive)
    num_classes = len(class_names) or (int(stats["class_counts"].shape[0])
                                       if "class_counts" in stats else 0)
    preferred = stats.get("preferred_class")
    colours: list[str | None] = []
    for i in range(n):
        c = i if aligned else int(preferred[i]) if preferred is not None else -1
        colours.append(None if dead[i] else class_colour(c, num_classes) if c >= 0 else "#4a6fa5")
    titles = [long[i] + ("" if dead[i] else ": closest to " + ", ".join(
        f"{short[j]} ({s:+.2f})" for j, s in zip(idx[i].tolist(), sim[i].tolist()) if j >= 0))
        for i in range(n)]
    links = [f"#{card_anchor(score.slug, i)}" if i in carded else None for i in range(n)]
    what = "classes" if aligned else "neurons"
    colour_note = ("Colour: class." if aligned else "Colour: preferred class."
                   if preferred is not None else "")
    if any(dead):
        colour_note += " Hollow grey: dead."
    svg = neuron_map_svg(vectors, short, titles, colours, links, height=520,
                         caption=f"map of the {what} of {score.name}")
    listed = [i for i in card_order(stats, n, aligned) if not dead[i]][:max_listed]
    items = []
    for i in listed:
        near = [f"{_near(j, short, aligned)} <span class=\"sim\">{s:+.2f}</span>"
                for j, s in zip(idx[i].tolist(), sim[i].tolist()) if j >= 0]
        items.append(f"<li>{_named(i, long, aligned)} is closest to {', '.join(near)}</li>"
                     if near else f"<li>{_named(i, long, aligned)} has no alive neighbour</li>")
    gone = [i for i in range(n) if dead[i]]
    extra = []
    if gone:
        extra.append(f"Dead {'classes' if aligned else 'neurons'} (constant on the validation "
                     "data, so without neighbours): "
                     f"{', '.join(_near(i, short, aligned) for i in gone[:24])}"
                     f"{f' and {len(gone) - 24} more' if len(gone) > 24 else ''}.")
    alive_count = n - len(gone)
    if len(listed) < alive_count:
        extra.append(f"{alive_count - len(listed)} more alive neurons are not listed here (the "
                     "most selective come first; the layer's table has all).")
    many = ' class="many"' if len(items) > 16 else ""
    file_facts = [f"<code>{html.escape(knowledge_path.name)}</code>"]
    if knowledge.source_model:
        file_facts.append(html.escape(knowledge.source_model.rsplit(".", 1)[-1]))
    if knowledge.training_steps:
        file_facts.append(f"{knowledge.training_steps} training steps")
    if num_classes:
        file_facts.append(f"{num_classes} classes")
    file_facts.append(f"{len(knowledge)} layers")
    role = " (the logits: one neuron per class)" if aligned else ""
    heading = ("Look-alikes: the classes whose neurons fire together" if aligned
               else "Which neurons fire together")
    return f"""<header id="top">
<h1>What this network learned</h1>
<p class="lede">{" · ".join(file_facts)}. The most telling layer is
<b>{html.escape(score.name)}</b>{role}: {html.escape(layer_summary(score, vectors.shape[1],
"embedded" in knowledge.extra))} Neurons whose vectors are close fire together.</p>
</header>
{nav}
<div class="lead" id="lookalikes">
<div class="left"><figure>{svg}
<figcaption>The {what} of {html.escape(score.name)} laid out by their semantic vectors (first
two principal components of the unit vectors; near = similar). {colour_note} Hover a point
for its neighbours{", click it for its card" if carded else ""}.</figcaption></figure>
{explained}</div>
<div class="words">
<h2>{heading}</h2>
<ul{many}>{"".join(items)}</ul>
{"".join(f'<p class="small">{t}</p>' for t in extra)}
</div>
</div>"""


def about_section(
    knowledge: StaticKnowledge, knowledge_path: Path, scores: list[LayerScore]
) -> str:
    """The end of the page: the file's metadata, every layer's ranking numbers (linked to
    its section) with the rule, and what selectivity means."""
    extra = knowledge.extra
    embedded = extra.get("embedded")
    facts = [
        ("knowledge file", str(knowledge_path)),
        ("models" if "; " in (knowledge.source_model or "") else "teacher model" if not embedded
         else "model", knowledge.source_model or "unknown"),
        ("training steps", str(knowledge.training_steps) if knowledge.training_steps or not embedded
         else "not recorded"),
        *([("vectors", f"{embedded}, in-sample fidelity {float(extra['fidelity/joint']):.4f}"
            if "fidelity/joint" in extra else str(embedded))] if embedded else []),
        ("classes", ", ".join(knowledge.class_names) if knowledge.class_names else "unknown"),
        ("lightning_semvec", knowledge.package_version),
    ]
    unlearned = [name for name, layer in knowledge.layers.items() if not layer.learned]
    if unlearned:
        facts.append(("left out", "layers that learned nothing (a constant output or one neuron: "
                      "their vectors are their random start): " + ", ".join(unlearned)))
    listing = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts
    )

    def number(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.2f}"

    ranking = "".join(
        f'<tr><td class="num">{rank}</td><td><a href="#{s.slug}">{html.escape(s.name)}</a></td>'
        f'<td class="num">{s.neurons}</td><td class="num">{"" if s.dead is None else s.dead}</td>'
        f'<td class="num">{number(s.fidelity)}</td><td class="num">{number(s.selectivity)}</td>'
        f'<td class="num">{number(s.score)}</td></tr>'
        for rank, s in enumerate(scores, start=1)
    )
    with_selectivity = any("selectivity" in knowledge.statistics(n) for n in knowledge.layer_names)
    with_profiles = any("class_means" in knowledge.statistics(s.name) for s in scores)
    fidelity = "in-sample fidelity" if embedded else "held-out fidelity"
    return f"""
<section id="about">
<h2>About this file <a class="top" href="#top">top</a></h2>
<table>{listing}</table>
<h3>The layers, most telling first</h3>
<table><thead><tr><th>rank</th><th>layer</th><th>neurons</th><th>dead</th><th>{fidelity}</th>
<th>mean selectivity</th><th>score</th></tr></thead><tbody>{ranking}</tbody></table>
<p class="note">{html.escape(RANKING_RULE)}</p>
{f'<p class="note">{html.escape(SELECTIVITY_NOTE)}</p>' if with_selectivity else ""}
{f'<p class="note">{html.escape(AGREEMENT_RULE)}</p>' if with_profiles else ""}
</section>"""


def page(title: str, parts: Sequence[str]) -> str:
    """The whole HTML document of the report's ``parts``."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Semantic vectors: {html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
{"".join(parts)}
</body>
</html>
"""
