"""The one read model of a run: from journal records to attempts, units and their stages, mosaics.

A pure, deterministic function of the records (no clock, no file system), so `audit` can rebuild
exactly what consolidation wrote from the records stored in provenance.h5 and spot any edit, and
status, resume (core/runstate.py) and the timeline read a run the same way provenance does.
The newest record for a unit stage wins (a resumed run supersedes an interrupted one); every
record stays in the unit's event history and in the raw journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dream_hpc.core.journal import JournalFile, canonical
from dream_hpc.core.records import MEASURED_FIELDS, RESULT_FIELDS
from dream_hpc.core.workunit import STAGES

STAGE_ORDER = (*STAGES, "image3")


# --- the model ------------------------------------------------------------------------------
@dataclass
class StageRecord:
    stage: str
    status: str = "running"  # running -> done | failed | timeout; running at the end -> incomplete
    attempt: int = 0
    rank: int = -1
    host: str = ""
    start: str = ""
    end: str = ""
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    step: str = ""  # the last step seen (where it failed, timed out or was interrupted)
    error: str = ""
    record_hash: str = ""  # the journal record this state comes from
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    science_sha256: dict[str, str] = field(default_factory=dict)  # output -> science digest (provenance/digest.py)
    refs: dict[str, str] = field(default_factory=dict)
    ref_sha256: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    step_times: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    asn: Any = None  # mosaics only: the association
    journal: str = ""  # journal file of the latest record (where a live rank would still be writing)


@dataclass
class UnitRecord:
    unit_id: str
    status: str = "incomplete"
    stages: dict[str, StageRecord] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # unit_done: what the unit left behind
    wall_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    end: str = ""
    events: list[tuple] = field(default_factory=list)  # (time, attempt, rank, host, kind, stage, step, detail)
    # The latest start (what `dream-hpc status` shows): when, where, its log, the stages it set out to run.
    starts: int = 0
    since: str = ""
    rank: int = -1
    host: str = ""
    log: str = ""
    todo: list[str] = field(default_factory=list)
    latest: str = ""  # what its latest start or end said: running | done | failed | timeout
    current: str = ""  # the stage its latest record is about
    step: str = ""  # the step its latest record names
    error: str = ""  # the error of its latest failure (cleared by a new start)
    journal: str = ""  # journal file of its latest record


@dataclass
class Attempt:
    number: int
    info: dict[str, Any]  # run_start data (runinfo.collect)
    start: str
    end: str = ""
    status: str = "incomplete"  # run_end's status, or incomplete when it never ended (killed)
    n_done: int = -1
    n_failed: int = -1
    files: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)
    ranks: set[int] = field(default_factory=set)


@dataclass
class Model:
    files: list[JournalFile]
    attempts: list[Attempt]
    units: dict[str, UnitRecord]
    mosaics: dict[str, StageRecord]

    @property
    def digest(self) -> str:
        """One hash over every file's head: cite it to pin the whole record."""
        import hashlib

        text = "".join(f"{f.name}:{f.head}\n" for f in sorted(self.files, key=lambda f: f.name))
        return hashlib.sha256(text.encode()).hexdigest()


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _assign_attempts(files: list[JournalFile]) -> list[Attempt]:
    """Number the attempts (one per run_start) and give each journal file its attempt.

    A file belongs to the attempt of its own run_start, else of an `attempt` field in its records,
    else of the run_start closest in time to its first record (ranks start within seconds of
    each other; attempts are separated by at least one attempt's length).
    """
    starts = sorted(((r["time"], f.name, r["seq"], r) for f in files for r in f.records
                     if r.get("kind") == "run_start"), key=lambda t: t[:3])
    attempts: list[Attempt] = []
    by_number: dict[int, Attempt] = {}
    for i, (time, _, _, rec) in enumerate(starts, 1):
        data = rec.get("data") or {}
        number = data.get("attempt") if isinstance(data.get("attempt"), int) else i
        while number in by_number:  # two run_starts claiming one number: keep both, renumber
            number += 1
        att = Attempt(number=number, info=data, start=time)
        attempts.append(att)
        by_number[number] = att
    if not attempts and any(f.records for f in files):  # journal without run_start (killed at once)
        first = min(r["time"] for f in files for r in f.records)
        attempts.append(Attempt(number=1, info={}, start=first))
        by_number[1] = attempts[0]
    from datetime import datetime

    def seconds(t: str) -> float:
        try:
            return datetime.fromisoformat(t).timestamp()
        except (TypeError, ValueError):
            return 0.0

    for f in files:
        if not f.records:
            continue
        own = [r for r in f.records if r.get("kind") == "run_start"]
        tagged = [r["data"]["attempt"] for r in f.records
                  if isinstance(r.get("data"), dict) and isinstance(r["data"].get("attempt"), int)]
        if own:
            rec = own[0]
            att = next(a for a, s in zip(attempts, starts, strict=True) if s[3] is rec)
        elif tagged and tagged[0] in by_number:
            att = by_number[tagged[0]]
        else:
            t0 = seconds(f.records[0].get("time", ""))
            att = min(attempts, key=lambda a: (abs(seconds(a.start) - t0), a.number))
        f.attempt = att.number
        att.files.append(f.name)
    return sorted(attempts, key=lambda a: a.number)


def build(files: list[JournalFile]) -> Model:
    """The provenance model of a run from all its journal files (any order)."""
    files = sorted(files, key=lambda f: f.name)
    attempts = _assign_attempts(files)
    by_number = {a.number: a for a in attempts}
    ordered = sorted(((r.get("time", ""), f.name, r.get("seq", 0), f.attempt, r) for f in files for r in f.records),
                     key=lambda t: t[:3])
    units: dict[str, UnitRecord] = {}
    mosaics: dict[str, StageRecord] = {}
    for time, fname, _, attempt, rec in ordered:
        kind = rec.get("kind")
        data = rec.get("data") if isinstance(rec.get("data"), dict) else {}
        att = by_number.get(attempt)
        if att is not None:
            if isinstance(rec.get("host"), str):
                att.hosts.add(rec["host"])
            if isinstance(rec.get("rank"), int):
                att.ranks.add(rec["rank"])
        if kind == "run_end" and att is not None:
            att.end, att.status = time, str(data.get("status", "done"))
            att.n_done, att.n_failed = int(data.get("n_done", -1)), int(data.get("n_failed", -1))
        elif kind in ("mosaic_start", "mosaic_done", "mosaic_failed") or (kind == "step" and data.get("filter")
                                                                           and not rec.get("unit")):
            _mosaic_event(mosaics, kind, time, attempt, rec, data)
            name = str(data.get("filter") or rec.get("unit") or "unknown")
            if name in mosaics:
                mosaics[name].journal = fname
        elif rec.get("unit"):
            unit = units.setdefault(rec["unit"], UnitRecord(rec["unit"]))
            _unit_event(unit, kind, time, attempt, rec, data)
            _latest(unit, kind, time, fname, rec, data)
    for unit in units.values():
        for st in unit.stages.values():
            if st.status == "running":  # its journal ends here: the rank was killed or the run stopped
                st.status = "incomplete"
        unit.status = _unit_status(unit)
    for st in mosaics.values():
        if st.status == "running":
            st.status = "incomplete"
    return Model(files=files, attempts=attempts, units=dict(sorted(units.items())),
                 mosaics=dict(sorted(mosaics.items())))


def _fill_done(st: StageRecord, time: str, rec: dict[str, Any], data: dict[str, Any]) -> None:
    st.status, st.end, st.error, st.record_hash = "done", time, "", str(rec.get("hash", ""))
    for key in RESULT_FIELDS:
        value = data.get(key)
        setattr(st, key, dict(value) if isinstance(value, dict) else {})
    st.wall_s, st.cpu_s, st.peak_rss_mb = (_number(data.get(k)) for k in ("wall_s", "cpu_s", "peak_rss_mb"))
    if isinstance(data.get("start"), str) and data["start"]:  # the engine measures it where the stage ran
        st.start = data["start"]
    elif not st.start and st.wall_s == st.wall_s:
        st.start = _minus_seconds(time, st.wall_s)


def _minus_seconds(iso: str, seconds: float) -> str:
    from datetime import datetime, timedelta

    try:
        return (datetime.fromisoformat(iso) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    except (TypeError, ValueError):
        return ""


def _where(st: StageRecord, attempt: int, rec: dict[str, Any]) -> None:
    st.attempt, st.rank, st.host = attempt, int(rec.get("rank", -1)), str(rec.get("host", ""))


def _unit_event(unit: UnitRecord, kind: str, time: str, attempt: int, rec: dict[str, Any],
                data: dict[str, Any]) -> None:
    stage = str(data.get("stage", ""))
    step = str(data.get("step", ""))
    detail = {k: v for k, v in data.items() if k not in ("stage", "step", *RESULT_FIELDS)}
    unit.events.append((time, attempt, int(rec.get("rank", -1)), str(rec.get("host", "")), str(kind),
                        stage, step, canonical(detail) if detail else ""))
    current = unit.stages.get(stage)
    fresh = current is None or current.status != "running" or current.attempt != attempt
    if kind in ("unit_start", "step") and stage:
        if fresh and not (kind == "step" and data.get("status") == "done"):
            current = unit.stages[stage] = StageRecord(stage=stage, start=time)
            _where(current, attempt, rec)
        if current is not None and step:
            current.step = step
        unit.status = "incomplete"
    elif kind == "stage_done" and stage:
        if fresh:
            current = unit.stages[stage] = StageRecord(stage=stage)
        _where(current, attempt, rec)
        _fill_done(current, time, rec, data)
    elif kind in ("unit_failed", "unit_timeout") and stage:
        if fresh:
            current = unit.stages[stage] = StageRecord(stage=stage, start=time)
        _where(current, attempt, rec)
        current.status = "failed" if kind == "unit_failed" else "timeout"
        current.end, current.step, current.record_hash = time, step or current.step, str(rec.get("hash", ""))
        current.error = str(data.get("error") or f"exceeded its time limit of {data.get('limit_s')} s")
        unit.status = current.status
    elif kind == "unit_done":
        unit.status, unit.end = "done", time
        unit.outputs = dict(data.get("outputs") or {})
        unit.wall_s, unit.peak_rss_mb = _number(data.get("wall_s")), _number(data.get("peak_rss_mb"))


def _latest(unit: UnitRecord, kind: str, time: str, fname: str, rec: dict[str, Any], data: dict[str, Any]) -> None:
    """Where the unit is now, by its latest records (status follows them; resume reads its stages)."""
    unit.journal = fname
    if kind == "unit_start":
        unit.starts += 1
        unit.since, unit.rank, unit.host = time, int(rec.get("rank", -1)), str(rec.get("host", ""))
        unit.log, unit.todo = str(data.get("log") or ""), list(data.get("stages") or [])
        unit.current, unit.step, unit.error, unit.latest = str(data.get("stage") or ""), "", "", "running"
    elif kind == "step" and data.get("status") == "start":
        unit.current, unit.step = str(data.get("stage") or unit.current), str(data.get("step") or "")
    elif kind == "stage_done":
        stage = str(data.get("stage", ""))
        nxt = STAGES.index(stage) + 1 if stage in STAGES else len(STAGES)
        unit.current, unit.step = (STAGES[nxt] if nxt < len(STAGES) else stage), ""
    elif kind == "unit_done":
        unit.step, unit.error, unit.latest = "", "", "done"
    elif kind in ("unit_failed", "unit_timeout"):
        unit.latest = "failed" if kind == "unit_failed" else "timeout"
        unit.current, unit.step = str(data.get("stage") or ""), str(data.get("step") or "")
        unit.error = str(data.get("error") or "")
        if kind == "unit_timeout" and not unit.error:
            unit.error = f"exceeded its time limit of {float(data.get('limit_s') or 0):.0f} s"


def _unit_status(unit: UnitRecord) -> str:
    statuses = [unit.stages[s].status for s in sorted(unit.stages, key=stage_key)]
    if any(s in ("failed", "timeout") for s in statuses):
        return next(s for s in statuses if s in ("failed", "timeout"))
    if any(s == "incomplete" for s in statuses):
        return "incomplete"
    if unit.status == "done" or (statuses and all(s == "done" for s in statuses)
                                 and set(unit.stages) >= set(STAGES)):
        return "done"
    return "incomplete"


def stage_key(stage: str) -> tuple[int, str]:
    """Sort key: simulate, detector1, image2, then anything else (image3) by name."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def _mosaic_event(mosaics: dict[str, StageRecord], kind: str, time: str, attempt: int,
                  rec: dict[str, Any], data: dict[str, Any]) -> None:
    name = str(data.get("filter") or rec.get("unit") or "unknown")
    st = mosaics.get(name)
    if kind == "step":
        if st is not None and st.status == "running" and data.get("step"):
            st.step = str(data["step"])
        return
    if kind == "mosaic_start" or st is None or st.status != "running" or st.attempt != attempt:
        st = mosaics[name] = StageRecord(stage="image3", start=time)
        _where(st, attempt, rec)
        if kind == "mosaic_start":
            return
    if kind == "mosaic_done":
        _fill_done(st, time, rec, data)
        st.asn = data.get("asn")
        known = {"filter", "asn", *RESULT_FIELDS, *MEASURED_FIELDS}
        st.extra |= {k: v for k, v in data.items() if k not in known}
    else:  # mosaic_failed: an error, a time limit, or blocked (its inputs never finished)
        st.status = "timeout" if data.get("timeout") else "blocked" if data.get("blocked") else "failed"
        st.end, st.record_hash = time, str(rec.get("hash", ""))
        st.error, st.step = str(data.get("error", "")), str(data.get("step") or st.step or "")
