"""`dream-hpc status RUN`: a run's state from its journal (also while it runs), with failures and ETA."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import RunView, _ago, eta_seconds, failures, fmt_duration, read_run, stage_counts


def render(view: RunView, out: TextIO | None = None, max_rows: int = 30) -> None:
    out = out or sys.stdout
    n = len(view.units)
    interrupted = bool(view.starts) and (not view.ends or view.ends[-1]["time"] < view.starts[-1]["time"])
    state = "running" if view.running else (
        "interrupted (its last attempt ended without a run_end record: killed or crashed; rerun to resume)"
        if interrupted else "finished")
    if view.ends and not interrupted and view.ends[-1]["data"].get("status") != "ok" and not view.running:
        state = f"finished with status {view.ends[-1]['data'].get('status')}"
    if not view.starts:
        state = "not started"
    print(f"run {view.root}: {state}; last record {_ago(view.last_record)} ago", file=out)
    if view.starts:
        s = view.starts[-1]["data"]
        print(f"  attempt {len(view.starts)}: {s.get('mpi_size', 1)} rank(s) via {s.get('launcher', '?')} "
              f"on {', '.join(sorted(set(s.get('hosts') or [])))}, started {view.starts[-1]['time']}", file=out)
    parts = [f"{view.count(k)} {k}" for k in ("done", "running", "failed", "timeout", "interrupted", "pending")]
    print(f"units: {n} planned: " + ", ".join(parts), file=out)
    print(f"  {'stage':10s} {'done':>6s} {'running':>8s} {'failed':>7s}", file=out)
    for stage, c in stage_counts(view).items():
        print(f"  {stage:10s} {c['done']:6d} {c['running']:8d} {c['failed']:7d}", file=out)
    if view.mosaics:
        print("mosaics: " + ", ".join(f"{m.filter} {m.status}" + (f" ({m.step})" if m.status == "running" and m.step
                                                                   else "") for m in view.mosaics.values()), file=out)
    eta = eta_seconds(view)
    if eta is not None:
        print(f"ETA for the units: {fmt_duration(eta)}", file=out)
    running = [u for u in view.units.values() if u.status == "running"]
    if running:
        print("running:", file=out)
        for u in running[:max_rows]:
            where = f"{u.stage}/{u.step}" if u.step else f"{u.stage}"
            print(f"  {u.unit_id:40s} rank {u.rank} on {u.host}: {where}, for {_ago(u.since)}", file=out)
    print_failures(view, out, max_rows)
    for p in view.problems[:max_rows]:
        print(f"journal problem: {p}", file=out)


def print_failures(view: RunView, out: TextIO | None = None, max_rows: int = 50) -> None:
    out = out or sys.stdout
    bad = failures(view)
    bad_m = [m for m in view.mosaics.values() if m.status in ("failed", "interrupted")]
    if not bad and not bad_m:
        return
    print(f"failures ({len(bad)} units, {len(bad_m)} mosaics):", file=out)
    print(f"  {'unit':40s} {'status':11s} {'stage':9s} {'step':18s} error", file=out)
    for u in bad[:max_rows]:
        print(f"  {u.unit_id:40s} {u.status:11s} {u.stage or '-':9s} {u.step or '-':18s} {u.error or '-'}"
              + (f"  [log: {u.log}]" if u.log else ""), file=out)
    for m in bad_m:
        print(f"  {'mosaic ' + m.filter:40s} {m.status:11s} {'mosaic':9s} {m.step or '-':18s} {m.error or '-'}"
              f"  [log: logs/mosaic_{m.filter}.log]", file=out)
    if len(bad) > max_rows:
        print(f"  ... and {len(bad) - max_rows} more (dream-hpc status RUN --json lists all)", file=out)


def _cmd_status(args: argparse.Namespace) -> int:
    from dream_hpc.core.errors import UserError

    root = Path(args.run)
    if not (root / "journal").is_dir():
        raise UserError(f"{root}: not a dream-hpc run directory (no journal/; give the --out of a run)")
    run = RunDir(root.resolve())
    view = read_run(run)
    if args.json:
        out = {"root": str(view.root), "running": view.running, "units": {k: asdict(v) for k, v in view.units.items()},
               "mosaics": {k: asdict(v) for k, v in view.mosaics.items()}, "problems": view.problems,
               "stage_counts": stage_counts(view), "eta_s": eta_seconds(view)}
        json.dump(out, sys.stdout, indent=1, default=str)
        print()
    else:
        render(view)
    if args.timeline:
        from dream_hpc.engine.timeline import write_timeline

        print(f"timeline: {write_timeline(run, Path(args.timeline))}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="progress, failures and ETA of a run (read-only; works while it runs)")
    p.add_argument("run", help="run directory (the --out of dream-hpc run/survey)")
    p.add_argument("--json", action="store_true", help="machine-readable state of every unit and mosaic")
    p.add_argument("--timeline", metavar="PNG", help="also draw the per-rank timeline into this PNG file")
    p.set_defaults(func=_cmd_status)
