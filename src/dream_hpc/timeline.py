"""The per-rank timeline PNG: which unit each rank ran when, coloured by stage, failures marked.

Drawn from the journal alone (one row per rank and attempt), so it can be redrawn at any time,
also for a run that was killed: `dream-hpc status RUN --timeline PNG`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dream_hpc.journal import journal_files, read_file
from dream_hpc.rundir import RunDir, atomic_path

STAGE_COLOURS = {"simulate": "#4c72b0", "detector1": "#55a868", "image2": "#c4a000", "mosaic": "#8172b2"}
MARKS = {"failed": ("X", "#d62728", "failed"), "timeout": ("v", "#ff7f0e", "timed out"),
         "killed": ("x", "black", "rank killed / interrupted")}


@dataclass
class Bar:
    row: int
    start: float
    end: float
    stage: str
    unit: str
    mark: str | None = None  # failed | timeout | killed


def _t(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def collect(run: RunDir) -> tuple[list[str], list[Bar], float]:
    """Rows (one per journal file: a rank in one attempt), bars, and the time origin."""
    files = []
    for path in journal_files(run.journal):
        records, _ = read_file(path)
        if records:
            files.append((records[0]["time"], records[0].get("rank", 0), path.name, records))
    files.sort(key=lambda f: f[:2])
    if not files:
        return [], [], 0.0
    t0 = min(_t(f[0]) for f in files)
    attempt_of: dict[str, int] = {}
    starts = sorted({r["time"] for f in files for r in f[3] if r["kind"] == "run_start"})
    rows, bars = [], []
    for row, (first, rank, _name, records) in enumerate(files):
        attempt = sum(1 for s in starts if s <= first) or 1
        attempt_of[_name] = attempt
        rows.append(f"attempt {attempt} rank {rank} ({records[0].get('host', '?')})")
        open_unit: dict[str, Any] | None = None
        for rec in records:
            kind, data, now = rec["kind"], rec.get("data", {}), _t(rec["time"])
            if kind in ("unit_start", "mosaic_start"):
                key = rec.get("unit") or f"mosaic {data.get('filter')}"
                stage = data.get("stage", "mosaic")
                open_unit = {"key": key, "stage": stage, "since": now}
            elif kind in ("stage_done", "mosaic_done"):
                stage = data.get("stage", "mosaic") if kind == "stage_done" else "mosaic"
                start = _t(data["start"]) if data.get("start") else now - float(data.get("wall_s", 0))
                key = rec.get("unit") or f"mosaic {data.get('filter')}"
                bars.append(Bar(row, start - t0, now - t0, stage, key))
                if open_unit is not None:
                    open_unit["since"] = now
                    if kind == "mosaic_done":
                        open_unit = None
            elif kind in ("unit_failed", "unit_timeout", "mosaic_failed") and open_unit is not None:
                stage = data.get("stage") or ("mosaic" if kind == "mosaic_failed" else open_unit["stage"])
                mark = "timeout" if kind == "unit_timeout" or data.get("timeout") else "failed"
                bars.append(Bar(row, open_unit["since"] - t0, now - t0, stage, open_unit["key"], mark))
                open_unit = None
            elif kind == "unit_done":
                open_unit = None
            elif kind == "step" and open_unit is not None and data.get("stage"):
                open_unit["stage"] = data["stage"]
        if open_unit is not None:  # a unit in progress when the rank stopped writing (killed, or still running)
            last = _t(records[-1]["time"])
            bars.append(Bar(row, open_unit["since"] - t0, max(last, open_unit["since"]) - t0,
                            open_unit["stage"], open_unit["key"], "killed"))
    return rows, bars, t0


def write_timeline(run: RunDir, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows, bars, t0 = collect(run)
    height = min(40.0, 1.6 + 0.38 * max(len(rows), 1))
    fig, ax = plt.subplots(figsize=(11, height))
    for b in bars:
        colour = STAGE_COLOURS.get(b.stage, "#999999")
        ax.barh(b.row, max(b.end - b.start, 0.05), left=b.start, height=0.7, color=colour,
                edgecolor="white" if b.mark is None else MARKS[b.mark][1], linewidth=0.5 if b.mark is None else 1.5,
                hatch=None if b.mark is None else "//")
        if b.mark:
            symbol, colour, _ = MARKS[b.mark]
            ax.plot(b.end, b.row, marker=symbol, color=colour, markersize=9, zorder=5)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started" + (f" ({dt.datetime.fromtimestamp(t0, dt.UTC):%Y-%m-%d %H:%M} UTC)"
                                                     if t0 else ""))
    n_fail = sum(b.mark in ("failed", "timeout") for b in bars)
    n_units = len({b.unit for b in bars if not b.unit.startswith("mosaic")})
    ax.set_title(f"{run.root.name}: {n_units} units on {len(rows)} rank rows; {n_fail} failed or timed out",
                 fontsize=10)
    handles = [Patch(color=c, label=s) for s, c in STAGE_COLOURS.items()]
    handles += [plt.Line2D([], [], marker=m, color=c, linestyle="", label=lbl) for m, c, lbl in MARKS.values()]
    ax.grid(axis="x", alpha=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png
