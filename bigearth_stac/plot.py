"""Plots of patches, footprints, label statistics and metrics. Each returns a matplotlib Figure.

Kept out of the dataset classes (STYLE.md): the notebooks and ``bigearth-stac show`` call these.
matplotlib is imported lazily (extra ``[plot]``) and the Agg backend works headless.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bigearth_stac.vocab import CLC_COLOURS, CODE_OF_43, LABELS_19, LABELS_43, RGB_BANDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bigearth_stac.patch import Patch


def _figure(**kw: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kw)  # not pyplot: no global state, safe in threads and headless


def rgb(bands: Mapping[str, np.ndarray], percentiles: tuple[float, float] = (2, 98)) -> np.ndarray:
    """An 8-bit-range float RGB composite (B04, B03, B02) stretched between two percentiles."""
    stack = np.stack([bands[b].astype("float32") for b in RGB_BANDS], axis=-1)
    lo, hi = np.percentile(stack, percentiles)
    return np.clip((stack - lo) / max(hi - lo, 1e-6), 0, 1)


def _db_stretch(array: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(array, (2, 98))
    return np.clip((array - lo) / max(hi - lo, 1e-6), 0, 1)


def _label_text(patch: Patch, width: int = 46) -> str:
    lines = ["19 classes:"] + [f"  - {line}" for n in patch.labels_19 for line in textwrap.wrap(n, width)[:1]]
    if not patch.labels_19:
        lines.append("  (none: only classes without a 19-class counterpart)")
    lines += ["43 classes (CLC Level 3):"] + [f"  {CODE_OF_43[n]} {textwrap.shorten(n, width)}" for n in patch.labels_43]
    return "\n".join(lines)


def plot_patch(patch: Patch) -> Figure:
    """RGB composite, S1 VV and VH (if present) and both label sets of one patch."""
    panels = [p for p in ("rgb", "VV", "VH") if (p == "rgb" and all(b in patch.bands for b in RGB_BANDS)) or p in patch.bands]
    fig = _figure(figsize=(3.2 * len(panels) + 4.2, 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1, width_ratios=[1] * len(panels) + [1.3])
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "rgb":
            ax.imshow(rgb(patch.bands))
            ax.set_title("Sentinel-2 RGB (B04 B03 B02)", fontsize=9)
        else:
            ax.imshow(_db_stretch(patch.bands[panel]), cmap="gray")
            ax.set_title(f"Sentinel-1 {panel} (dB)", fontsize=9)
        ax.set_axis_off()
    text_ax = axes[-1]
    text_ax.set_axis_off()
    text_ax.text(0, 1, _label_text(patch), va="top", ha="left", fontsize=7.5, family="monospace", transform=text_ax.transAxes)
    fig.suptitle(patch.id, fontsize=10)
    return fig


def plot_patches(patches: Sequence[Patch], columns: int = 4) -> Figure:
    """A grid of RGB composites titled with their 19-class labels."""
    rows = max(1, -(-len(patches) // columns))
    fig = _figure(figsize=(3 * columns, 3.3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, patch in zip(axes, patches, strict=False):
        ax.imshow(rgb(patch.bands))
        ax.set_title("\n".join(textwrap.shorten(n, 28) for n in patch.labels_19[:3]) or "(no 19-class label)", fontsize=7)
    return fig


def plot_footprints(bboxes: Iterable[Sequence[float]], highlight: Iterable[Sequence[float]] = (), title: str = "") -> Figure:
    """Patch footprints (lon/lat bboxes) on a plain lon/lat map, optionally highlighting some."""
    from matplotlib.patches import Rectangle

    fig = _figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    boxes = [list(b) for b in bboxes]
    marked = [list(b) for b in highlight]
    for b, colour in [(b, "#999999") for b in boxes] + [(b, "#d62728") for b in marked]:
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=True, alpha=0.6, color=colour))
        ax.plot((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, marker="s", ms=3, color=colour)
    allb = np.array(boxes + marked) if boxes or marked else np.zeros((1, 4))
    pad = 0.5
    ax.set_xlim(allb[:, 0].min() - pad, allb[:, 2].max() + pad)
    ax.set_ylim(allb[:, 1].min() - pad, allb[:, 3].max() + pad)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_aspect(1 / np.cos(np.deg2rad(allb[:, 1].mean())))
    ax.grid(True, lw=0.3)
    ax.set_title(title or f"{len(boxes) + len(marked)} patch footprints", fontsize=10)
    return fig


def plot_label_counts(labels: Iterable[Sequence[str]], nomenclature: str = "19") -> Figure:
    """Horizontal bar chart of how many patches carry each class."""
    counts = Counter(name for row in labels for name in row)
    classes = LABELS_19 if nomenclature == "19" else LABELS_43
    fig = _figure(figsize=(7, 0.22 * len(classes) + 1), layout="constrained")
    ax = fig.subplots()
    colours = ["#" + CLC_COLOURS[CODE_OF_43[c]].lstrip("#") if c in CODE_OF_43 else "#4c72b0" for c in classes]
    ax.barh([textwrap.shorten(c, 40) for c in classes], [counts.get(c, 0) for c in classes], color=colours, edgecolor="#333333", lw=0.3)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("patches")
    return fig


def plot_per_class_metric(values: Mapping[str, float], metric: str = "F1") -> Figure:
    """Bar chart of a per-class metric (e.g. F1 of the 19 classes after training)."""
    fig = _figure(figsize=(7, 0.22 * len(values) + 1), layout="constrained")
    ax = fig.subplots()
    names = list(values)
    ax.barh([textwrap.shorten(n, 40) for n in names], [values[n] for n in names], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel(metric)
    return fig
