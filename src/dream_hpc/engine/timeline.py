"""The per-rank timeline PNG: which unit each rank ran when, coloured by stage, failures marked.

Drawn from the journal alone, through the read model (one row per rank and attempt), so it can be redrawn at any time,
also for a run that was killed: `dream-hpc status RUN --timeline PNG`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from dream_hpc.core.journal import read_journal
from dream_hpc.core.rundir import RunDir, atomic_path
from dream_hpc.core.runmodel import Model, build

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
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return 0.0


_END = {"stage_done": None, "unit_failed": "failed", "unit_timeout": "timeout"}


def collect(run: RunDir, model: Model | None = None) -> tuple[list[str], list[Bar], float]:
    """Rows (a rank in one attempt), bars, and the time origin, from the one read model of the run.

    Every unit's event history holds every attempt: a bar runs from the unit's previous boundary
    (its start, or the end of its previous stage) to a stage_done, a failure or a time-out; a unit
    whose history stops mid-stage ends in a "killed" bar at its rank's last record."""
    model = model if model is not None else build(read_journal(run.journal))  # given: read once by the caller
    rows: dict[tuple[int, int, str], int] = {}
    last_seen: dict[tuple[int, int, str], float] = {}
    keys = sorted({(e[1], e[2], e[3]) for u in model.units.values() for e in u.events}
                  | {(st.attempt, st.rank, st.host) for st in model.mosaics.values()})
    for key in keys:
        rows[key] = len(rows)
    t0 = min([_t(a.start) for a in model.attempts if a.start] or [0.0])
    bars: list[Bar] = []
    for uid, unit in model.units.items():
        since: dict[int, tuple[float, str, tuple]] = {}  # attempt -> (boundary time, stage running, row key)
        for time, attempt, rank, host, kind, stage, _step, detail in unit.events:
            key = (attempt, rank, host)
            row, now = rows[key], _t(time)
            last_seen[key] = max(last_seen.get(key, 0.0), now)
            if kind == "unit_start":
                since[attempt] = (now, stage, key)
            elif kind == "step" and attempt in since and stage:
                since[attempt] = (since[attempt][0], stage, key)
            elif kind in _END and attempt in since:
                start = since[attempt][0]
                info = json.loads(detail) if detail else {}
                if kind == "stage_done" and info.get("start"):
                    start = _t(info["start"])
                bars.append(Bar(row, start - t0, now - t0, stage or since[attempt][1], uid, _END[kind]))
                if kind == "stage_done":
                    since[attempt] = (now, stage, key)
                else:
                    del since[attempt]
            elif kind == "unit_done":
                since.pop(attempt, None)
        for start, stage, key in since.values():  # in progress when its rank stopped writing
            end = max(last_seen.get(key, start), start)
            bars.append(Bar(rows[key], start - t0, end - t0, stage, uid, "killed"))
    for name, st in model.mosaics.items():
        if not st.start:
            continue
        mark = {"done": None, "failed": "failed", "timeout": "timeout", "blocked": None}.get(st.status, "killed")
        end = _t(st.end) if st.end else last_seen.get((st.attempt, st.rank, st.host), _t(st.start))
        bars.append(Bar(rows[(st.attempt, st.rank, st.host)], _t(st.start) - t0, end - t0, "mosaic",
                        f"mosaic {name}", mark))
    labels = [f"attempt {a} rank {r} ({h or '?'})" for a, r, h in rows]
    return labels, bars, t0


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
