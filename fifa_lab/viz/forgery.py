"""Pictures of forgeries: the real source, the fake, its ground-truth mask and where the pixels changed."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fifa_lab.viz.overlay import overlay

MASK_COLOUR = (255, 40, 40)


def difference_map(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: the largest per-channel absolute difference, 0..255."""
    if fake.shape != real.shape:
        raise ValueError(f"fake {fake.shape} and real {real.shape} differ in size")
    return np.abs(fake.astype(np.int16) - real.astype(np.int16)).max(axis=-1).astype(np.float32)


def forgery_gallery(forgeries: Sequence, titles: Sequence[str] | None = None, diff_max: float = 64.0) -> Figure:
    """One row per forgery: real source | fake | ground-truth mask on the fake | |fake - real| heat map.

    ``forgeries`` are objects with ``real``, ``fake`` (``(H, W, 3)`` uint8) and ``mask`` (``(H, W)`` bool),
    such as :class:`fifa_lab.forge.Forgery`. The heat map is clipped at ``diff_max`` grey levels so
    faint artifacts stay visible.
    """
    rows = len(forgeries)
    if rows == 0:
        raise ValueError("no forgeries to show")
    fig, axes = plt.subplots(rows, 4, figsize=(9.6, 2.5 * rows), squeeze=False)
    for r, forgery in enumerate(forgeries):
        panels = [forgery.real, forgery.fake, overlay(forgery.fake, [forgery.mask], colours=[MASK_COLOUR])]
        for c, panel in enumerate(panels):
            axes[r, c].imshow(panel)
        heat = axes[r, 3].imshow(difference_map(forgery.fake, forgery.real), cmap="inferno", vmin=0, vmax=diff_max)
        title = titles[r] if titles is not None else f"{forgery.forgery_class} / {forgery.method}"
        axes[r, 0].set_ylabel(title, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("real source", "fake", "ground-truth mask", "|fake - real|")):
        ax.set_title(name, fontsize=10)
    fig.colorbar(heat, ax=axes[:, 3], fraction=0.05, label="grey levels")
    return fig
