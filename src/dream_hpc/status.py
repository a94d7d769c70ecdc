"""The state of a run read from its journal: `dream-hpc status RUN`, and the live progress line.

Status only reads (journal, plan.json, the lock file's text), so any user can run it at any time,
also while the job runs, and it never disturbs the run. Resume uses the same reading
(`read_run`) to know what each unit already finished.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dream_hpc.journal import journal_files, read_file, record_hash
from dream_hpc.rundir import RunDir
from dream_hpc.stages import STAGES

UNIT_STAGES = STAGES  # the chain contract's per-unit stages, in order
FINAL = ("done", "failed", "timeout")


@dataclass
class UnitState:
    unit_id: str
    status: str = "pending"  # pending | running | done | failed | timeout | interrupted
    stage: str | None = None  # where it is (running) or where it ended (failed / timeout)
    step: str | None = None
    error: str | None = None
    rank: int | None = None
    host: str | None = None
    since: str | None = None  # time of its latest unit_start
    log: str | None = None
    attempts: int = 0
    todo: list[str] = field(default_factory=list)  # stages its latest attempt set out to compute
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> latest stage_done data
    done: dict[str, Any] | None = None  # latest unit_done data
    journal: str | None = None  # journal file of its latest record


@dataclass
class MosaicState:
    filter: str
    status: str = "pending"  # pending | running | done | failed | interrupted
    step: str | None = None
    error: str | None = None
    data: dict[str, Any] | None = None  # latest mosaic_done data
    journal: str | None = None


@dataclass
class RunView:
    root: Path
    units: dict[str, UnitState] = field(default_factory=dict)
    mosaics: dict[str, MosaicState] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)  # run_start records
    ends: list[dict[str, Any]] = field(default_factory=list)  # run_end records
    problems: list[str] = field(default_factory=list)  # journal records that fail their hash
    planned: dict[str, dict[str, Any]] = field(default_factory=dict)  # unit id -> plan entry
    last_record: str | None = None
    live_files: set[str] = field(default_factory=set)

    def count(self, status: str) -> int:
        return sum(1 for u in self.units.values() if u.status == status)

    @property
    def running(self) -> bool:
        return bool(self.live_files)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _file_is_live(records: list[dict[str, Any]], host: str) -> bool:
    """A journal file belongs to a live rank: no run_end, and (same host) its process still exists."""
    if not records or any(r["kind"] == "run_end" for r in records):
        return False
    last = records[-1]
    if last.get("host") == host:
        return _pid_alive(int(last.get("pid", 0)))
    return True  # another node: cannot check; the latest-attempt rule below decides


def read_plan(run: RunDir) -> dict[str, dict[str, Any]]:
    if not run.plan.is_file():
        return {}
    try:
        data = json.loads(run.plan.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    units = data.get("units", data) if isinstance(data, dict) else data
    return {u["unit_id"]: u for u in units if isinstance(u, dict) and "unit_id" in u}


def read_run(run: RunDir) -> RunView:
    """Every unit's and mosaic's latest state, from all journal files of the run (all attempts)."""
    view = RunView(run.root, planned=read_plan(run))
    for uid in view.planned:
        view.units[uid] = UnitState(uid)
    host = socket.gethostname()
    stamped: list[tuple[str, str, int, dict[str, Any]]] = []
    latest_start = ""
    for path in journal_files(run.journal):
        try:
            records, _ = read_file(path)
        except OSError as e:
            view.problems.append(f"{path.name}: unreadable ({e.strerror})")
            continue
        good = []
        for rec in records:
            if record_hash(rec) != rec.get("hash"):
                view.problems.append(f"{path.name}: record {rec.get('seq')} fails its hash (ignored)")
                continue
            good.append(rec)
            if rec["kind"] == "run_start":
                latest_start = max(latest_start, rec["time"])
        if _file_is_live(good, host):
            view.live_files.add(path.name)
        stamped.extend((r["time"], path.name, r["seq"], r) for r in good)
    stamped.sort(key=lambda t: t[:3])
    # A file on another host with nothing after an older attempt began is not live.
    for name in list(view.live_files):
        recs = [r for _, f, _, r in stamped if f == name]
        if recs and recs[-1]["time"] < latest_start and not any(r["kind"] == "run_start" for r in recs):
            view.live_files.discard(name)
    for _, fname, _, rec in stamped:
        _apply(view, fname, rec)
        view.last_record = rec["time"]
    for u in view.units.values():
        if u.status == "running" and u.journal not in view.live_files:
            u.status = "interrupted"
    for m in view.mosaics.values():
        if m.status == "running" and m.journal not in view.live_files:
            m.status = "interrupted"
    return view


def _apply(view: RunView, fname: str, rec: dict[str, Any]) -> None:
    kind, data, uid = rec["kind"], rec.get("data", {}), rec.get("unit")
    if kind == "run_start":
        view.starts.append(rec)
        return
    if kind == "run_end":
        view.ends.append(rec)
        return
    if kind.startswith("mosaic_") or (kind == "step" and uid is None and "filter" in data):
        filt = data["filter"]
        m = view.mosaics.setdefault(filt, MosaicState(filt))
        m.journal = fname
        if kind == "mosaic_start":
            m.status, m.step, m.error = "running", None, None
        elif kind == "step" and data.get("status") == "start":
            m.step = data.get("step")
        elif kind == "mosaic_done":
            m.status, m.data, m.error = "done", data, None
        elif kind == "mosaic_failed":
            m.status, m.error = "failed", data.get("error")
            m.step = data.get("step", m.step)
        return
    if uid is None:
        return
    u = view.units.setdefault(uid, UnitState(uid))
    u.journal = fname
    if kind == "unit_start":
        u.status, u.stage, u.step, u.error = "running", data.get("stage"), None, None
        u.rank, u.host, u.since, u.log = rec.get("rank"), rec.get("host"), rec["time"], data.get("log")
        u.attempts += 1
        u.todo = list(data.get("stages") or [])
    elif kind == "step":
        if data.get("status") == "start":
            u.stage, u.step = data.get("stage", u.stage), data.get("step")
    elif kind == "stage_done":
        u.stages[data["stage"]] = data
        u.step = None
        nxt = UNIT_STAGES.index(data["stage"]) + 1 if data["stage"] in UNIT_STAGES else len(UNIT_STAGES)
        u.stage = UNIT_STAGES[nxt] if nxt < len(UNIT_STAGES) else data["stage"]
    elif kind == "unit_done":
        u.status, u.done, u.step, u.error = "done", data, None, None
    elif kind in ("unit_failed", "unit_timeout"):
        u.status = "failed" if kind == "unit_failed" else "timeout"
        u.stage, u.step, u.error = data.get("stage"), data.get("step"), data.get("error")
        if kind == "unit_timeout" and not u.error:
            u.error = f"exceeded its time limit of {data.get('limit_s', 0):.0f} s"


# --- rendering ------------------------------------------------------------------------------
def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    secs = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()
    return fmt_duration(secs)


def fmt_duration(secs: float) -> str:
    secs = max(0, int(secs))
    if secs < 90:
        return f"{secs}s"
    if secs < 5400:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def stage_counts(view: RunView) -> dict[str, dict[str, int]]:
    counts = {s: {"done": 0, "running": 0, "failed": 0} for s in UNIT_STAGES}
    for u in view.units.values():
        for s in UNIT_STAGES:
            if s in u.stages or u.status == "done":
                counts[s]["done"] += 1
        if u.status == "running" and u.stage in counts:
            counts[u.stage]["running"] += 1
        if u.status in ("failed", "timeout") and u.stage in counts:
            counts[u.stage]["failed"] += 1
    return counts


def eta_seconds(view: RunView) -> float | None:
    """Remaining time at this attempt's pace: planned cost left / planned cost finished per second."""
    if not view.running or not view.starts:
        return None
    t0 = max(r["time"] for r in view.starts)
    cost = {uid: float(p.get("est_cpu_s") or 1.0) for uid, p in view.planned.items()}
    done_now = sum(cost.get(u.unit_id, 1.0) for u in view.units.values()
                   if u.status == "done" and u.done is not None and (u.since or "") >= t0)
    left = sum(cost.get(u.unit_id, 1.0) for u in view.units.values() if u.status not in FINAL)
    elapsed = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(t0)).total_seconds()
    if done_now <= 0 or elapsed <= 0:
        return None
    return left / (done_now / elapsed)


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


def failures(view: RunView) -> list[UnitState]:
    return [u for u in view.units.values() if u.status in ("failed", "timeout", "interrupted")]


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


# --- live progress on rank 0 ----------------------------------------------------------------
class Progress:
    """Units done / failed / running per stage with an ETA, redrawn on a TTY, plain lines otherwise."""

    def __init__(self, costs: dict[str, float], stream: TextIO | None = None, interval_s: float = 30.0,
                 n_mosaics: int = 0):
        self.costs = costs
        self.stream = stream = stream or sys.stderr
        self.tty = stream.isatty()
        self.interval = 1.0 if self.tty else interval_s
        self.t0 = time.time()
        self.last = 0.0
        self.stage_of: dict[str, str] = {}  # running key -> stage
        self.done = {s: 0 for s in UNIT_STAGES}
        self.failed = {s: 0 for s in UNIT_STAGES}
        self.n_done = self.n_failed = self.n_skipped = self.n_missing = 0
        self.cost_finished = self.cost_computed = 0.0
        self.n_mosaics, self.mosaics_done = n_mosaics, 0

    def on_start(self, key: str, stage: str, verified: tuple[str, ...] = ()) -> None:
        """A task began at `stage`; `verified` stages were already done in an earlier attempt."""
        self.stage_of[key] = stage
        for s in verified:
            self.done[s] += 1

    def on_stage(self, key: str, stage: str) -> None:
        if key in self.stage_of:
            self.stage_of[key] = stage

    def on_stage_done(self, key: str, stage: str) -> None:
        if stage in self.done:
            self.done[stage] += 1

    def on_outcome(self, oc: Any) -> None:
        self.stage_of.pop(oc.key, None)
        ok = oc.status in ("done", "skipped")
        if oc.kind == "mosaic":
            self.mosaics_done += ok
            if not ok:
                self._line(f"mosaic {oc.key} {oc.status} in {oc.step or '-'}: {oc.error}")
            return
        self.cost_finished += self.costs.get(oc.key, 0.0)
        if oc.status == "missing":  # `dream-hpc mosaic`: an unfinished unit, left out (not computed)
            self.n_missing += 1
        elif oc.status == "skipped":
            self.n_done += 1
            self.n_skipped += 1
            for s in UNIT_STAGES:
                self.done[s] += 1
        elif ok:
            self.n_done += 1
            self.cost_computed += self.costs.get(oc.key, 0.0)
        else:
            self.n_failed += 1
            if oc.stage in self.failed:
                self.failed[oc.stage] += 1
            what = "timed out" if oc.status == "timeout" else "failed"
            self._line(f"unit {oc.key} {what} in {oc.stage}/{oc.step or '-'}: {oc.error}")
        self.tick(force=not self.tty and not ok and oc.status != "missing")

    def eta(self) -> float | None:
        """Planned cost left divided by the planned cost computed per second so far."""
        if self.cost_computed <= 0:
            return None
        rate = self.cost_computed / max(time.time() - self.t0, 1e-6)
        return max(sum(self.costs.values()) - self.cost_finished, 0.0) / rate

    def text(self) -> str:
        total = len(self.costs)
        running: dict[str, int] = {}
        for stage in self.stage_of.values():
            running[stage] = running.get(stage, 0) + 1
        stages = " | ".join(f"{s} {self.done[s]}" + (f" +{running[s]} run" if running.get(s) else "")
                            + (f" {self.failed[s]} failed" if self.failed[s] else "") for s in UNIT_STAGES)
        mos = f" | mosaic {self.mosaics_done}/{self.n_mosaics}" + (
            f" +{running['mosaic']} run" if running.get("mosaic") else "") if self.n_mosaics else ""
        eta = self.eta()
        eta_s = f" | ETA {fmt_duration(eta)}" if eta is not None else ""
        skipped = f" ({self.n_skipped} already done)" if self.n_skipped else ""
        skipped += f", {self.n_missing} not finished" if self.n_missing else ""
        return (f"[{fmt_duration(time.time() - self.t0)}] units {self.n_done}/{total} done{skipped}, "
                f"{self.n_failed} failed | {stages}{mos}{eta_s}")

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.text())
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def line(self, msg: str) -> None:
        self._line(msg)

    def _line(self, msg: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --- command --------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    from dream_hpc.cli import UserError

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
        from dream_hpc.timeline import write_timeline

        print(f"timeline: {write_timeline(run, Path(args.timeline))}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="progress, failures and ETA of a run (read-only; works while it runs)")
    p.add_argument("run", help="run directory (the --out of dream-hpc run/survey)")
    p.add_argument("--json", action="store_true", help="machine-readable state of every unit and mosaic")
    p.add_argument("--timeline", metavar="PNG", help="also draw the per-rank timeline into this PNG file")
    p.set_defaults(func=_cmd_status)
