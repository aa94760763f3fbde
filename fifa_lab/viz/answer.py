"""Pictures of model answers and training: grounded text coloured like its masks, overlays, loss curves.

A grounded answer interleaves ``<p>phrase</p> [SEG]`` with text; the i-th ``[SEG]`` owns mask i.
:func:`grounded_segments` splits such a text into pieces once, and both the HTML view and the overlay
take their colours from :func:`mask_colours`, so a phrase and its mask always share a colour.
"""
from __future__ import annotations

import html
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fifa_lab.model.config import PHRASE_END, PHRASE_START
from fifa_lab.tasks.registry import SEG_TOKEN
from fifa_lab.viz.overlay import RGB, distinct_colours, overlay

_PIECES = re.compile(rf"{re.escape(PHRASE_START)}(.*?){re.escape(PHRASE_END)}(\s*{re.escape(SEG_TOKEN)})?"
                     rf"|({re.escape(SEG_TOKEN)})", re.S)


@dataclass
class Piece:
    """Part of an answer: plain ``text``, or a phrase (``phrase=True``) owning mask ``mask_index`` (or None)."""

    text: str
    phrase: bool = False
    mask_index: int | None = None


def grounded_segments(text: str) -> list[Piece]:
    """Split an answer into plain text and phrases; a ``[SEG]`` right after a phrase gives it the next mask.

    A ``[SEG]`` with no phrase before it still takes a mask index (shown as a marker), so indices always
    follow the ``[SEG]`` order of the text, which is the order of the model's masks.
    """
    pieces, position, masks = [], 0, 0
    for match in _PIECES.finditer(text):
        if match.start() > position:
            pieces.append(Piece(text[position:match.start()]))
        phrase, seg_after, bare_seg = match.groups()
        if bare_seg:
            pieces.append(Piece("", phrase=True, mask_index=masks))
            masks += 1
        else:
            pieces.append(Piece(phrase.strip(), phrase=True, mask_index=masks if seg_after else None))
            masks += 1 if seg_after else 0
        position = match.end()
    if position < len(text):
        pieces.append(Piece(text[position:]))
    return pieces


def mask_colours(count: int) -> list[RGB]:
    """The colour of mask ``i`` (and of its phrase) for an answer with ``count`` masks."""
    return distinct_colours(count, offset=0.02)


def grounded_html(text: str, hidden: Collection[int] = (), paths: Sequence[str] | None = None) -> str:
    """An answer as HTML: each grounded phrase underlined and tinted in its mask's colour.

    ``hidden`` lists mask indices switched off (their phrase is shown plain and struck through);
    ``paths`` (one per mask) become each phrase's tooltip, e.g. the FICT concept path.
    """
    pieces = grounded_segments(text)
    colours = mask_colours(sum(p.mask_index is not None for p in pieces))
    parts = []
    for piece in pieces:
        if not piece.phrase:
            parts.append(html.escape(piece.text))
            continue
        label = html.escape(piece.text) or "&#9632;"
        if piece.mask_index is None:
            parts.append(f'<span style="border-bottom:1px dashed #888" title="phrase without a mask">{label}</span>')
            continue
        r, g, b = colours[piece.mask_index]
        title = html.escape(paths[piece.mask_index]) if paths and piece.mask_index < len(paths) else \
            f"mask {piece.mask_index + 1}"
        if piece.mask_index in hidden:
            parts.append(f'<span style="text-decoration:line-through;color:#777" title="{title}">{label}</span>')
        else:
            parts.append(f'<span style="background:rgba({r},{g},{b},0.28);border-bottom:3px solid rgb({r},{g},{b});'
                         f'padding:0 2px" title="{title}">{label}</span>')
    return '<div style="font-family:sans-serif;line-height:1.7">' + "".join(parts) + "</div>"


def answer_overlay(image: np.ndarray, masks: np.ndarray, hidden: Collection[int] = ()) -> np.ndarray:
    """``image`` with mask i painted in :func:`mask_colours` colour i, except the ``hidden`` ones."""
    colours = mask_colours(len(masks))
    shown = [i for i in range(len(masks)) if i not in hidden]
    return overlay(image, [masks[i] for i in shown], [colours[i] for i in shown])


def plain_text(text: str) -> str:
    """An answer without grounding markup (what a reader sees)."""
    return " ".join("".join(p.text for p in grounded_segments(text)).split())


def plot_training(log: Sequence[dict[str, Any]]) -> Figure:
    """Loss terms, per-task cross-entropy and validation metrics of a training log (``read_log``)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    if not log:
        for ax in axes:
            ax.text(0.5, 0.5, "no steps logged yet", ha="center", va="center")
        return fig
    steps = np.array([row["step"] for row in log])
    window = max(1, len(log) // 40)  # a moving average: single batches are noisy

    def smooth(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, float)
        kernel = np.ones(window) / window
        return np.convolve(values, kernel, mode="valid") if len(values) >= window else values

    # "parsing" only in logs written since the parsing head; older logs are still drawn
    for key in [k for k in ("loss", "ce", "bce", "dice", "forgery", "parsing") if any(k in row for row in log)]:
        values = smooth([row.get(key, 0.0) for row in log])
        axes[0].plot(steps[len(steps) - len(values):], values, label=key)
    axes[0].set(title="training losses", xlabel="step", yscale="log")
    axes[0].legend()
    tasks = sorted({task for row in log for task in row.get("task_ce", {})})
    for task in tasks:
        points = [(row["step"], row["task_ce"][task]) for row in log if task in row.get("task_ce", {})]
        xs, ys = zip(*points)
        values = smooth(ys)
        axes[1].plot(xs[len(xs) - len(values):], values, label=task)
    axes[1].set(title="token cross-entropy per task", xlabel="step", yscale="log")
    axes[1].legend(fontsize=7, ncol=2)
    val = [(row["step"], row["val"]) for row in log if "val" in row]
    if val:
        xs = [s for s, _ in val]
        axes[2].plot(xs, [v["det_acc"] for _, v in val], "o-", label="Det accuracy")
        axes[2].plot(xs, [v["loc_miou"] for _, v in val], "s-", label="Loc mIoU (fakes)")
        axes[2].set_ylim(0, 1)
        axes[2].legend()
    axes[2].set(title="validation", xlabel="step")
    fig.tight_layout()
    return fig
