"""The state of a run read from its journal: what status, resume and the summary see.

It only reads (journal, plan.json), so any user can run it at any time, also while the job runs,
and it never disturbs the run. Resume uses the same reading (`read_run`) to know what each unit
already finished: the view is derived from the one read model (core/runmodel.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.core.journal import JournalFile, ordered_records, read_journal, record_hash
from dream_hpc.core.records import RESULT_FIELDS
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runmodel import Model, StageRecord, build
from dream_hpc.core.workunit import STAGES

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
    # tasks of tiled mosaics (FILTER/phase/id; the filter's merge is in `mosaics`)
    mosaic_tasks: dict[str, MosaicState] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)  # run_start records
    ends: list[dict[str, Any]] = field(default_factory=list)  # run_end records
    problems: list[str] = field(default_factory=list)  # journal records that fail their hash
    planned: dict[str, dict[str, Any]] = field(default_factory=dict)  # unit id -> plan entry
    last_record: str | None = None
    live_files: set[str] = field(default_factory=set)
    model: Model | None = field(default=None, repr=False)  # the read model it was derived from (timeline, report)

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
    if not records or any(r.get("kind") == "run_end" for r in records):
        return False
    last = records[-1]
    if last.get("host") == host:
        return _pid_alive(int(last.get("pid", 0)))
    return True  # another node: cannot check; the latest-attempt rule below decides


def plan_entries(path: Path) -> dict[str, dict[str, Any]]:
    """plan.json's units by id (the one reader of plan.json); {} when it is absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    units = data.get("units", data) if isinstance(data, dict) else data
    return {u["unit_id"]: u for u in units if isinstance(u, dict) and "unit_id" in u}


def read_plan(run: RunDir) -> dict[str, dict[str, Any]]:
    return plan_entries(run.plan)


def _intact(view: RunView, files: list[JournalFile]) -> list[JournalFile]:
    """The files with every record that fails its hash left out (and named in view.problems): status
    and resume never trust an edited record; audit reports it (provenance/audit.py)."""
    kept = []
    for f in files:
        good = []
        for rec in f.records:
            if record_hash(rec) != rec.get("hash"):
                view.problems.append(f"{f.name}: record {rec.get('seq')} fails its hash (ignored)")
            else:
                good.append(rec)
        kept.append(JournalFile(name=f.name, lines=f.lines, torn_tail_bytes=f.torn_tail_bytes, records=good))
    return kept


def _stage_data(st: StageRecord) -> dict[str, Any]:
    """A finished stage as resume and the summary read it: what its stage_done record said."""
    return {"stage": st.stage, **{k: getattr(st, k) for k in RESULT_FIELDS},
            "wall_s": st.wall_s, "cpu_s": st.cpu_s, "peak_rss_mb": st.peak_rss_mb, "start": st.start}


def read_run(run: RunDir) -> RunView:
    """Every unit's and mosaic's latest state, from all journal files of the run (all attempts).

    The journal is read once (core/journal.py) and interpreted once (core/runmodel.py), exactly as
    provenance reads it; this adds what only a live run has: which ranks are still writing."""
    view = RunView(run.root, planned=read_plan(run))
    for uid in view.planned:
        view.units[uid] = UnitState(uid)
    host = socket.gethostname()
    try:
        files = _intact(view, read_journal(run.journal))
    except OSError as e:
        view.problems.append(f"{run.journal}: unreadable ({e.strerror})")
        files = []
    records = ordered_records(files)
    latest_start = max((r["time"] for r in records if r.get("kind") == "run_start"), default="")
    for f in files:
        if _file_is_live(f.records, host):
            # a file on another host with nothing after a newer attempt began is not live
            own_start = any(r.get("kind") == "run_start" for r in f.records)
            if own_start or f.records[-1].get("time", "") >= latest_start:
                view.live_files.add(f.name)
    view.starts = [r for r in records if r.get("kind") == "run_start"]
    view.ends = [r for r in records if r.get("kind") == "run_end"]
    view.last_record = records[-1]["time"] if records else None
    model = view.model = build(files)
    for uid, u in model.units.items():
        state = view.units.setdefault(uid, UnitState(uid))
        state.journal, state.attempts = u.journal or None, u.starts
        state.rank, state.host = (u.rank, u.host or None) if u.starts else (None, None)
        state.since, state.log, state.todo = u.since or None, u.log or None, list(u.todo)
        state.stages = {name: _stage_data(st) for name, st in u.stages.items() if st.status == "done"}
        if u.end:  # a unit_done was recorded: what the unit left behind
            state.done = {"outputs": dict(u.outputs), "wall_s": u.wall_s, "peak_rss_mb": u.peak_rss_mb}
        state.stage, state.step, state.error = u.current or None, u.step or None, u.error or None
        if u.latest in ("done", "failed", "timeout"):
            state.status = u.latest
        elif u.latest == "running":
            state.status = "running" if u.journal in view.live_files else "interrupted"
        if state.status == "done":
            state.step, state.error = None, None
    for name, st in model.mosaics.items():
        m = (view.mosaic_tasks if "/" in name else view.mosaics).setdefault(name, MosaicState(name))
        m.journal, m.step, m.error = st.journal or None, st.step or None, st.error or None
        if st.status == "done":
            m.status, m.error = "done", None
            m.data = {**{k: getattr(st, k) for k in RESULT_FIELDS}, "filter": name, "asn": st.asn,
                      "wall_s": st.wall_s, "cpu_s": st.cpu_s, "peak_rss_mb": st.peak_rss_mb, "start": st.start}
        elif st.status in ("failed", "timeout", "blocked"):
            m.status = "failed"
        else:
            m.status = "running" if st.journal in view.live_files else "interrupted"
    return view


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
    counts = {s: {"done": 0, "running": 0, "failed": 0} for s in STAGES}
    for u in view.units.values():
        for s in STAGES:
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


def failures(view: RunView) -> list[UnitState]:
    return [u for u in view.units.values() if u.status in ("failed", "timeout", "interrupted")]


# --- measured costs (for `dream-hpc plan` advice) --------------------------------------------
def measured_unit_costs(run: str | Path | RunDir) -> dict[str, dict[str, Any]]:
    """Per unit, from the journal: wall and CPU seconds and peak memory, in total and per stage.

    ``{unit_id: {"wall_s", "cpu_s", "peak_rss_mb", "stages": {stage: {"wall_s", "cpu_s", "peak_rss_mb"}}}}``
    using each stage's latest record (only units with at least one finished stage appear).
    """

    run = run if isinstance(run, RunDir) else RunDir(Path(run).resolve())
    view = read_run(run)
    costs: dict[str, dict[str, Any]] = {}
    for uid, u in view.units.items():
        if not u.stages:
            continue
        stages = {s: {k: float(d.get(k, 0.0)) for k in ("wall_s", "cpu_s", "peak_rss_mb")} for s, d in u.stages.items()}
        costs[uid] = {"wall_s": sum(s["wall_s"] for s in stages.values()),
                      "cpu_s": sum(s["cpu_s"] for s in stages.values()),
                      "peak_rss_mb": max(s["peak_rss_mb"] for s in stages.values()),
                      "complete": u.status == "done", "stages": stages}
    return costs
