"""The figures of the run report, as PNG data URIs small enough to embed in one HTML file.

Every image the page shows goes through `png_uri`: scaled to at most `MAX_WIDTH` pixels and stored
as an 8-bit palette PNG (plots and stretched previews lose nothing visible; a 12-inch matplotlib
figure drops from ~400 KB to ~60 KB), so the demo's page stays well under a few MB and a copied run
directory needs nothing else to show it. Figures drawn here summarise many units at once (box
plots, a collection-drawn timeline), so their cost and size do not grow with the row count.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

MAX_WIDTH = 1100  # px: the page's content width at 1x
DPI = 80


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(data: bytes, max_width: int = MAX_WIDTH) -> bytes:
    """A PNG (any mode) re-encoded small: at most `max_width` wide, 256-colour palette, optimised."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.width > max_width:
            im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.Resampling.LANCZOS)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            bg.alpha_composite(rgba)
            im = bg
        if im.mode not in ("L", "P"):
            im = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        im.save(out, format="PNG", optimize=True)
    return out.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_uri(path: str | Path, max_width: int = MAX_WIDTH) -> str | None:
    """An existing PNG file as a small data URI; None when it is missing or not an image."""
    try:
        return data_uri(png_bytes(Path(path).read_bytes(), max_width))
    except (OSError, ValueError):
        return None


def figure_uri(fig: Any, max_width: int = MAX_WIDTH) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return data_uri(png_bytes(buf.getvalue(), max_width))


# --- the run ------------------------------------------------------------------------------------
STAGE_COLOURS = {"simulate": "#4c72b0", "detector1": "#55a868", "image2": "#c4a000", "mosaic": "#8172b2"}
MARK_COLOURS = {"failed": "#d62728", "timeout": "#ff7f0e", "killed": "black"}
MAX_TIMELINE_ROWS = 64  # beyond this, rows are binned: one band per group of ranks


def timeline_uri(labels: list[str], bars: list[Any], title: str) -> str | None:
    """Per-rank timeline (engine/timeline.collect's rows and bars) drawn as one collection per stage.

    With more rows than MAX_TIMELINE_ROWS (thousands of ranks), consecutive rows share a band, so the
    figure keeps its size; failures stay marked."""
    if not bars:
        return None
    plt = _plt()
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    n_rows = max(len(labels), 1)
    per_band = max(1, math.ceil(n_rows / MAX_TIMELINE_ROWS))
    n_bands = math.ceil(n_rows / per_band)
    height = min(9.0, 1.8 + 0.22 * n_bands)
    fig, ax = plt.subplots(figsize=(12, height))
    by_stage: dict[str, list[list[tuple[float, float]]]] = {}
    marks: dict[str, tuple[list[float], list[float]]] = {}
    for b in bars:
        band = b.row // per_band
        x0, x1 = b.start, max(b.end, b.start + 0.05)
        y0, y1 = band - 0.35, band + 0.35
        by_stage.setdefault(b.stage, []).append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        if b.mark:
            xs, ys = marks.setdefault(b.mark, ([], []))
            xs.append(b.end)
            ys.append(band)
    for stage, polys in by_stage.items():
        ax.add_collection(PolyCollection(polys, facecolors=STAGE_COLOURS.get(stage, "#999999"), edgecolors="none"))
    for mark, (xs, ys) in marks.items():
        ax.plot(xs, ys, linestyle="", marker="X" if mark == "failed" else "v" if mark == "timeout" else "x",
                color=MARK_COLOURS[mark], markersize=7, zorder=5)
    ax.set_xlim(0, max(b.end for b in bars) * 1.01 + 0.1)
    ax.set_ylim(n_bands - 0.5, -0.5)
    if n_bands <= 40:
        ticks = [labels[i * per_band] if per_band == 1 else f"rows {i * per_band}-{min(n_rows, (i + 1) * per_band) - 1}"
                 for i in range(n_bands)]
        ax.set_yticks(range(n_bands), ticks, fontsize=7)
    else:
        ax.set_ylabel(f"rank rows ({per_band} per band)" if per_band > 1 else "rank rows")
    ax.set_xlabel("seconds since the run started")
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=c, label=s) for s, c in STAGE_COLOURS.items()]
    handles += [plt.Line2D([], [], marker=m, color=MARK_COLOURS[k], linestyle="", label=lbl)
                for k, m, lbl in (("failed", "X", "failed"), ("timeout", "v", "timed out"),
                                  ("killed", "x", "interrupted"))]
    ax.grid(axis="x", alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))
    return figure_uri(fig)


METRICS = (("wall_s", "wall time [s]"), ("cpu_s", "CPU time [s]"), ("peak_rss_mb", "peak memory [MB]"))


def distributions_uri(values: dict[str, dict[str, list[float]]]) -> str | None:
    """Box plots per stage of each metric (values: stage -> metric -> one value per unit)."""
    stages = [s for s in values if any(values[s].get(m) for m, _ in METRICS)]
    if not stages:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 3.4))
    for ax, (metric, label) in zip(axes, METRICS, strict=True):
        data = [[v for v in values[s].get(metric, []) if math.isfinite(v)] for s in stages]
        shown = [(s, d) for s, d in zip(stages, data, strict=True) if d]
        if not shown:
            ax.set_axis_off()
            continue
        box = ax.boxplot([d for _, d in shown], whis=(0, 100), widths=0.55, patch_artist=True,
                         medianprops={"color": "black"})
        for patch, (s, _) in zip(box["boxes"], shown, strict=True):
            patch.set_facecolor(STAGE_COLOURS.get(s, "#999999"))
            patch.set_alpha(0.75)
        ax.set_xticks(range(1, len(shown) + 1), [f"{s}\n(n={len(d)})" for s, d in shown], fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("per stage, over units (box: quartiles, whiskers: min-max, line: median)", fontsize=9)
    fig.tight_layout()
    return figure_uri(fig)


# --- the science -----------------------------------------------------------------------------------
def completeness_uri(filt: str, rows: list[dict[str, Any]], snr_mag: float | None = None) -> str | None:
    """Recovered fraction vs input magnitude (science.completeness_by_mag rows) for one filter."""
    rows = [r for r in rows if r.get("n")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    mid = [(r["mag_lo"] + r["mag_hi"]) / 2 for r in rows]
    ax.step(mid, [r["n_matched"] / r["n"] for r in rows], where="mid", color="tab:blue",
            label="all input sources on the mosaic")
    sample = [(m, r["n_sample_matched"] / r["n_sample"]) for m, r in zip(mid, rows, strict=True) if r.get("n_sample")]
    if sample:
        ax.plot(*zip(*sample, strict=True), "o", color="tab:orange", ms=4, label="bright isolated (the check)")
    ax2 = ax.twinx()
    ax2.bar(mid, [r["n"] for r in rows], width=(rows[0]["mag_hi"] - rows[0]["mag_lo"]) * 0.9, color="0.85",
            zorder=0)
    ax2.set_ylabel("input sources per bin", fontsize=8, color="0.4")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(f"input {filt} [AB mag]")
    ax.set_ylabel("recovered fraction")
    ax.set_title(f"{filt}: completeness vs magnitude", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return figure_uri(fig, max_width=700)
