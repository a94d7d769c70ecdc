"""What a run tells its user at the end: the science check per mosaic, `summary.json`, the printed summary.

Everything here is read back from the run directory (journal, products), never from the process
that computed it, so `dream-hpc survey` and `dream-hpc mosaic` (e.g. a Slurm Image3 job after an
`srun dream-hpc run --no-mosaic`) report the same run the same way.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core import faults
from dream_hpc.core.rundir import RunDir, atomic_path
from dream_hpc.core.runstate import RunView, fmt_duration, read_run
from dream_hpc.core.workunit import STAGES
from dream_hpc.drivers import science_truth, tiled_science

# `survey --strict` / `mosaic --strict` exit code when a science check failed (3 is the engine's
# "stopped on request, resumable", which Slurm scripts requeue on).
EXIT_SCIENCE_FAILED = 4


def science_checks(cfg: SurveyConfig, run: RunDir, view: RunView, filters: set[str] | None = None,
                   per_tile: bool = False) -> dict[str, Any]:
    """Filter -> summary entry of its mosaic: products, tweakreg outcome and the science check
    (match to the input catalog, with a figure); or {"error": ...} when the mosaic was not made.

    A tiled mosaic without an assembled i2d (a survey-sized grid) is judged tile by tile
    (drivers/tiled_science.py); `per_tile` judges it so even when the cores were assembled."""
    from dream_hpc.stages import science

    entries: dict[str, Any] = {}
    for key, m in sorted(view.mosaics.items()):
        filt = key.upper()
        if filters and filt not in filters:
            continue
        log = run.rel(run.logs / f"mosaic_{key}.log")
        if m.status != "done" or not m.data:
            entries[filt] = {"error": m.error or f"mosaic {m.status}", "log": log}
            continue
        extra = m.data.get("extra", {})
        entry: dict[str, Any] = {k: extra.get(k) for k in ("product", "n_inputs", "i2d", "segm", "cat", "preview",
                                                            "tweakreg", "n_refcat_stars", "refcat", "tile_index")}
        if extra.get("phase") == "merge":  # a tiled mosaic: aligned by its per-visit astrometry tasks
            entry["tweakreg"] = science_truth.tiled_tweakreg(cfg, view, filt)
        entry.update(wall_s=m.data.get("wall_s"), cpu_s=m.data.get("cpu_s"), peak_rss_mb=m.data.get("peak_rss_mb"),
                     step_times=m.data.get("step_times", {}), log=log)
        t0 = time.monotonic()
        try:
            if tiled_science.per_tile(extra, per_tile):
                check = tiled_science.check(cfg, run, view, filt, extra)
            else:
                check = science.check_filter(cfg, filt, run.root / extra["i2d"], run.root / extra["cat"], run.root)
            check.update(science_truth.alignment_check(cfg, run, view, filt, entry["tweakreg"] or {}, check))
            figure = run.figures / f"science_{filt.lower()}.png"
            science.figure([check], figure)
            entry["science"] = science.public(check)
            entry["science_figure"] = run.rel(figure)
        except Exception as e:  # the mosaic stands; say why it could not be checked
            entry["science_error"] = f"{type(e).__name__}: {e}"
        entry["science_wall_s"] = time.monotonic() - t0
        entry["striping"] = science_truth.striping(view, filt)
        entries[filt] = entry
    return entries


def unit_entries(view: RunView) -> dict[str, Any]:
    """Per unit: status, where it failed, and per stage wall / CPU seconds, peak memory and step times."""
    units: dict[str, Any] = {}
    for uid, u in view.units.items():
        plan = view.planned.get(uid, {})
        stages = {s: u.stages[s] for s in STAGES if s in u.stages}
        units[uid] = {
            "filter": plan.get("filter"), "detector": plan.get("detector"), "status": u.status,
            "wall_s": sum(float(d.get("wall_s", 0.0)) for d in stages.values()),
            "cpu_s": sum(float(d.get("cpu_s", 0.0)) for d in stages.values()),
            "peak_rss_mb": max((float(d.get("peak_rss_mb", 0.0)) for d in stages.values()), default=0.0),
            "stage_wall_s": {s: float(d.get("wall_s", 0.0)) for s, d in stages.items()},
            # stages its latest attempt did not compute: verified by checksum from an earlier attempt
            "skipped_existing": [s for s in STAGES if u.todo and s not in u.todo],
            "step_times": {s: d.get("step_times", {}) for s, d in stages.items()},
            "attempts": u.attempts,
        }
    return units


def build_summary(cfg: SurveyConfig, run: RunDir, view: RunView, mosaics: dict[str, Any], wall_s: float) -> dict:
    units = unit_entries(view)
    stage_times = {}
    for stage in STAGES:
        vals = [u["stage_wall_s"][stage] for u in units.values() if stage in u["stage_wall_s"]]
        if vals:
            stage_times[stage] = {"mean_s": sum(vals) / len(vals), "max_s": max(vals), "n": len(vals)}
    failures = {u.unit_id: {"status": u.status, "stage": u.stage, "step": u.step, "error": u.error or "-",
                            "log": u.log or run.rel(run.logs / f"{u.unit_id}.log")}
                for u in view.units.values() if u.status in ("failed", "timeout", "interrupted")}
    return {
        "survey": cfg.survey.name, "config_sha256": cfg.sha256, "run": str(run.root),
        "n_units": len(view.units), "n_done": view.count("done"), "n_failed": len(failures),
        "n_not_finished": sum(u.status in ("pending", "running") for u in view.units.values()),
        "wall_s": wall_s, "stage_times": stage_times, "failures": failures, "mosaics": mosaics,
        "units": units, "journal_problems": view.problems,
    }


def write_summary(run: RunDir, summary: dict[str, Any]) -> Path:
    summary["figures"] = sorted(run.rel(p) for p in run.figures.glob("*.png"))
    text = json.dumps(summary, indent=1, default=str) + "\n"
    with atomic_path(run.summary) as tmp, open(tmp, "w") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        faults.at("summary", run.root)  # test hook (off unless DREAM_HPC_TEST_FAULT names it)
        f.write(text[len(text) // 2:])
    return run.summary


def finish(cfg: SurveyConfig, run: RunDir, wall_s: float, filters: set[str] | None = None) -> dict[str, Any]:
    """Science checks, summary.json and RUN/provenance.h5 for a run whose compute has ended.

    With `filters` (`dream-hpc mosaic --filter`), the other filters' entries of an earlier summary stay."""
    from dream_hpc.provenance.write import consolidate

    view = read_run(run)
    mosaics = science_checks(cfg, run, view, filters)
    if filters and run.summary.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):  # no earlier summary: this filter alone
            mosaics = {**json.loads(run.summary.read_text()).get("mosaics", {}), **mosaics}
    summary = build_summary(cfg, run, view, mosaics, wall_s)
    summary["provenance"] = run.rel(consolidate(run))
    summary["science_passed"] = science_truth.all_passed(summary)
    write_summary(run, summary)
    return summary


def ok(summary: dict[str, Any]) -> bool:
    return summary["n_failed"] == 0 and summary["n_not_finished"] == 0 and all(
        "error" not in m for m in summary["mosaics"].values())


def _signed(v: Any) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def mosaic_lines(mosaics: dict[str, Any]) -> list[str]:
    lines = []
    for filt, m in mosaics.items():
        if "error" in m:
            lines.append(f"  {filt}: mosaic NOT MADE: {m['error'][:300]}")
            continue
        lines.append(f"  {filt}: {m['i2d'] or m.get('tile_index')} ({m['n_inputs']} exposures, {m.get('wall_s') or 0:.0f} s), "
                     f"tweakreg {science_truth.tweakreg_word(m.get('tweakreg') or {})}, preview {m['preview']}")
        sc = m.get("science")
        if not sc:
            lines.append(f"      science check not made: {m.get('science_error', '-')}")
            continue
        off, mag, passed = sc["offset_px"], sc["mag_residual"], sc["passed"]
        comp = "n/a" if sc["completeness"] is None else f"{sc['completeness']:.0%}"
        lines.append(f"      science: completeness {comp} of {sc['n_bright_isolated']} bright isolated "
                     f"[{'ok' if passed['completeness'] else 'LOW'}]; offsets dx {_signed(off['median_dx'])} "
                     f"dy {_signed(off['median_dy'])} px <= {sc.get('offset_limit_px') or 0.1:.2f} "
                     f"[{'ok' if passed['astrometry'] else 'OFF'}]; "
                     f"mag residual {_signed(mag['median'])} ({mag['population']}, n={mag['n']}) "
                     f"[{'ok' if passed['photometry'] else 'OFF'}]")
        lines += tiled_science.line(sc)
        lines += science_truth.alignment_lines(sc)
        if m.get("striping"):
            st = m["striping"]
            lines.append(f"      striping (rate images, row-median scatter): {st['median_row_scatter_dn_s']:.3f} DN/s, "
                         f"{st['median_excess_over_white']:.1f}x white noise")
    return lines


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"survey {s['survey']}: {s['n_done']}/{s['n_units']} units done, {s['n_failed']} failed"
             + (f", {s['n_not_finished']} not finished" if s.get("n_not_finished") else "")
             + f", wall {fmt_duration(s['wall_s'])}"]
    for stage, t in s["stage_times"].items():
        lines.append(f"  {stage:10s} mean {t['mean_s']:6.1f} s  max {t['max_s']:6.1f} s  ({t['n']} units)")
    for unit_id, f in s["failures"].items():
        lines.append(f"  {f['status'].upper()} {unit_id}: {f['stage']}{(':' + f['step']) if f['step'] else ''}: "
                     f"{f['error'][:160]} (log: {f['log']})")
    lines += mosaic_lines(s["mosaics"])
    lines.append(f"  summary: {Path(s['run']) / 'summary.json'}; provenance: {s.get('provenance', '-')}; "
                 f"figures: {', '.join(s.get('figures', []))}")
    lines.append(science_truth.verdict_line(s))
    return "\n".join(lines)
