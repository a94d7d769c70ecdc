"""The scheduler-neutral execution core: `dream-hpc run`, longest-first dynamic scheduling, resume.

The same code runs serially (one process), under `mpiexec` and under `srun`: `mpi.world()` gives a
communicator (serial or MPI) and this module only ever asks it to send, poll, broadcast and gather.
Rank 0 hands out tasks on request, longest expected first, so a slow unit never leaves other ranks
idle; a task is one unit (simulate -> detector1 -> image2) or, once all units of a filter have
ended, exactly one Image3 mosaic of that filter. Each rank computes in a worker subprocess
(`worker.py`) and journals what happened; a finished unit is recognised on resume by the checksums
in its journal records, verified against the files on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.cli import UserError
from dream_hpc.config import SurveyConfig, load_config, parse_config
from dream_hpc.rundir import RunDir, RunDirError, atomic_write_text, sha256_file
from dream_hpc.stages import STAGES
from dream_hpc.workunit import WorkUnit

UNIT_STAGES = STAGES  # the chain contract's per-unit stages, in order
# Fallback Image3 cost relative to its inputs' estimates (when the cost model cannot size apertures).
MOSAIC_COST_FRACTION = 0.5
# Units with no estimate still need an order and a limit.
DEFAULT_UNIT_COST_S = 60.0
# A file RUN/STOP asks a running `dream-hpc run` to start nothing new and exit when running units end.
STOP_FILE = "STOP"
EXIT_STOPPED = 3  # exit code after such a stop (the run is resumable)


# --- tasks and resume ----------------------------------------------------------------------
def verify_outputs(run: RunDir, outputs: dict[str, str]) -> bool:
    """Every recorded product exists and has its recorded sha256 (a file merely existing is not enough)."""
    if not outputs:
        return False
    for rel, sha in outputs.items():
        try:
            path = run.inside(rel)
        except RunDirError:
            return False
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return True


@dataclass
class Task:
    """One thing a rank computes: a unit's remaining stages, or one filter's mosaic."""

    key: str  # unit id, or mosaic_<FILTER>
    kind: str  # unit | mosaic
    cost: float  # expected CPU seconds (the plan's estimate): longest first
    limit_s: float  # time limit; over it the worker is killed and the task recorded as timed out
    unit: WorkUnit | None = None
    filter: str | None = None
    units: list[WorkUnit] = field(default_factory=list)  # a mosaic's inputs
    recorded: dict[str, Any] = field(default_factory=dict)  # what earlier attempts journaled
    expected_inputs: dict[str, str] = field(default_factory=dict)  # a mosaic's current *_cal checksums
    verified_stages: list[str] = field(default_factory=list)
    tail: float = 0.0  # expected work that must follow this task (its filter's mosaic)
    verify_only: bool = False  # `dream-hpc mosaic`: check a finished unit, never compute it

    @property
    def priority(self) -> int:
        """Mosaics first (they end the survey), then quick re-checks of recorded units, then new work."""
        if self.kind == "mosaic":
            return 0
        return 1 if self.recorded.get("done") or self.recorded.get("stages") else 2

    def sort_key(self) -> tuple[int, float, str]:
        """Longest expected path first: the task's own cost plus the mosaic that waits for it, so the
        filter with the longest Image3 finishes its units first and its mosaic overlaps other units."""
        return (self.priority, -(self.cost + self.tail), self.key)

    def stages_expected(self) -> list[str]:
        return list(UNIT_STAGES) if self.kind == "unit" else ["mosaic"]

    def resume_plan(self, run: RunDir) -> tuple[list[str], dict[str, str]]:
        """(stages still to run, checksums of products verified on disk). Runs on the rank: hashing
        is spread over the ranks instead of serialising on rank 0."""
        self.verified_stages = []
        if self.kind == "mosaic":
            done = self.recorded.get("done") or {}
            cal_in = {p: h for p, h in done.get("inputs", {}).items() if p.endswith("_cal.fits")}
            if done and cal_in == self.expected_inputs and verify_outputs(run, done.get("outputs", {})):
                return [], dict(done["outputs"])
            return ["mosaic"], {}
        done = self.recorded.get("done")
        if done and verify_outputs(run, done.get("outputs", {})):
            return [], dict(done["outputs"])
        verified: dict[str, str] = {}
        previous: dict[str, str] | None = None
        for stage in UNIT_STAGES:
            rec = self.recorded.get("stages", {}).get(stage)
            if not rec or not verify_outputs(run, rec.get("outputs", {})):
                break
            # a stage counts only if it read exactly the products the stage before it left
            if previous is not None and any(previous.get(p, h) != h for p, h in rec.get("inputs", {}).items()):
                break
            verified.update(rec["outputs"])
            previous = rec["outputs"]
            self.verified_stages.append(stage)
        return list(UNIT_STAGES[len(self.verified_stages):]), verified


def image3_seconds(units: list[WorkUnit]) -> float:
    """Expected Image3 CPU seconds over these inputs (the plan's cost model)."""
    try:
        from dream_hpc import cost

        pixels = sum(cost.unit_pixels(u) for u in units)
        return cost.image3_cost(len(units), pixels, 0.0, cost.exposure_groups(units)).cpu_s
    except Exception:  # no aperture data: a rough figure only orders tasks and sets a time limit
        return MOSAIC_COST_FRACTION * sum(u.est_cpu_s or DEFAULT_UNIT_COST_S for u in units)


def mosaic_tails(units: list[WorkUnit]) -> dict[str, float]:
    """Filter -> expected cost of its Image3 over all its planned units."""
    by_filter: dict[str, list[WorkUnit]] = {}
    for u in units:
        by_filter.setdefault(u.filter, []).append(u)
    return {f: image3_seconds(us) for f, us in by_filter.items()}


def unit_time_limit(cfg: SurveyConfig, cost: float) -> float:
    eng = cfg.engine
    if eng.unit_timeout_s > 0:
        return eng.unit_timeout_s
    return max(eng.min_timeout_s, cost * eng.timeout_factor)


# --- the scheduler (no MPI, no processes: also driven by bench/scheduler_sim.py) -------------
MosaicFactory = Callable[[str, list[Task], dict[str, Any]], Task]


class Scheduler:
    """Hands out tasks longest-first on request and releases one mosaic per filter when its units end.

    A filter's mosaic is released when every unit of that filter has ended: with all of them
    succeeded, or with some failed if partial mosaics are allowed; otherwise it is blocked with a
    message naming the missing units.
    """

    def __init__(self, tasks: list[Task], mosaic_factory: MosaicFactory | None = None,
                 allow_partial: bool = False):
        self.tasks = {t.key: t for t in tasks}
        self._heap = [(t.sort_key(), t.key) for t in tasks]
        heapq.heapify(self._heap)
        self.running: dict[str, Task] = {}
        self.outcomes: dict[str, Any] = {}
        self.mosaic_factory = mosaic_factory
        self.allow_partial = allow_partial
        self.blocked: dict[str, str] = {}  # filter -> why its mosaic did not run
        self._left: dict[str, int] = {}
        for t in tasks:
            if t.kind == "unit" and t.unit is not None:
                self._left[t.unit.filter] = self._left.get(t.unit.filter, 0) + 1

    def push(self, task: Task) -> None:
        self.tasks[task.key] = task
        heapq.heappush(self._heap, (task.sort_key(), task.key))

    def next(self) -> Task | None:
        if not self._heap:
            return None
        _, key = heapq.heappop(self._heap)
        task = self.tasks[key]
        self.running[key] = task
        return task

    @property
    def pending(self) -> int:
        return len(self._heap)

    @property
    def finished(self) -> bool:
        return not self._heap and not self.running

    def complete(self, outcome: Any) -> Task | None:
        """Record an outcome; returns the mosaic task it released, if any."""
        task = self.running.pop(outcome.key)
        self.outcomes[outcome.key] = outcome
        if task.kind != "unit" or task.unit is None or self.mosaic_factory is None:
            return None
        filt = task.unit.filter
        self._left[filt] -= 1
        if self._left[filt]:
            return None
        mine = [t for t in self.tasks.values() if t.kind == "unit" and t.unit is not None and t.unit.filter == filt]
        ok = [t for t in mine if self.outcomes[t.key].status in ("done", "skipped")]
        bad = sorted(t.key for t in mine if self.outcomes[t.key].status not in ("done", "skipped"))
        if not ok:
            self.blocked[filt] = f"mosaic {filt} not run: none of its {len(mine)} units succeeded"
            return None
        if bad and not self.allow_partial:
            names = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            self.blocked[filt] = (f"mosaic {filt} not run: {len(bad)} of its {len(mine)} units did not finish "
                                  f"({names}); rerun to retry them, or set engine.allow_partial_mosaic: true")
            return None
        mosaic = self.mosaic_factory(filt, ok, self.outcomes)
        self.push(mosaic)
        return mosaic


def replay(tasks: list[Task], workers: int, durations: dict[str, float] | None = None,
           mosaic_seconds: Callable[[list[WorkUnit]], float] | None = None,
           latency_s: float = 0.005) -> dict[str, float]:
    """The Scheduler on a simulated clock (no compute): makespan and its lower bounds, in seconds.

    Units take `durations[key]` (default: their planned cost), mosaics `mosaic_seconds(units)`.
    Used to choose the task order before a run and by bench/scheduler_sim.py at cluster scale.
    """
    from dream_hpc.worker import Outcome

    durations = durations or {t.key: t.cost for t in tasks}
    mosaic_seconds = mosaic_seconds or image3_seconds
    mosaic_cost: dict[str, float] = {}

    def factory(filt: str, ok: list[Task], outcomes: dict[str, Any]) -> Task:
        mosaic_cost[f"mosaic_{filt}"] = c = mosaic_seconds([t.unit for t in ok])
        return Task(f"mosaic_{filt}", "mosaic", c, 1e9, filter=filt, units=[t.unit for t in ok])

    sched = Scheduler([Task(t.key, t.kind, t.cost, t.limit_s, unit=t.unit, tail=t.tail) for t in tasks], factory)
    idle = list(range(max(workers, 1)))
    running: list[tuple[float, int, str]] = []
    now = units_end = 0.0
    while not sched.finished:
        while idle and (task := sched.next()):
            dur = durations.get(task.key, mosaic_cost.get(task.key, task.cost))
            heapq.heappush(running, (now + latency_s + dur, idle.pop(), task.key))
        if not running:
            break
        now, worker, key = heapq.heappop(running)
        kind = sched.running[key].kind
        if kind == "unit":
            units_end = max(units_end, now)
        sched.complete(Outcome(key, kind, "done"))
        idle.append(worker)
    work = sum(durations.values())
    longest = max(durations.values(), default=0.0)
    all_work = work + sum(mosaic_cost.values())
    return {"workers": workers, "units_makespan": units_end, "units_lower_bound": max(work / workers, longest),
            "makespan": now, "lower_bound": max(all_work / workers, longest + max(mosaic_cost.values(), default=0.0)),
            "work": work, "mosaic_work": sum(mosaic_cost.values())}


def choose_order(tasks: list[Task], workers: int,
                 mosaic_seconds: Callable[[list[WorkUnit]], float] | None = None) -> tuple[str, dict[str, float]]:
    """Longest-path-first (a filter's units together, so its Image3 overlaps other units) pays off
    when mosaics differ and ranks are many; plain longest-first (every filter ends last, mosaics in
    parallel) when they are alike and ranks few. Replay both with the cost model; keep the faster.
    Returns the order's name and the predicted makespans; tasks keep `tail` only for path order."""
    if not any(t.tail for t in tasks):
        return "longest-first", {}
    plain = [Task(t.key, t.kind, t.cost, t.limit_s, unit=t.unit) for t in tasks]
    predicted = {"longest-path-first": replay(tasks, workers, mosaic_seconds=mosaic_seconds)["makespan"],
                 "longest-first": replay(plain, workers, mosaic_seconds=mosaic_seconds)["makespan"]}
    order = min(predicted, key=lambda k: (predicted[k], k != "longest-first"))
    if order == "longest-first":
        for t in tasks:
            t.tail = 0.0
    return order, predicted


# --- rank 0: the coordinator loop ----------------------------------------------------------
class Coordinator:
    """Rank 0: serves requests from other ranks and feeds its own executor, until all tasks ended."""

    def __init__(self, comm: Any, scheduler: Scheduler, executor: Any | None, progress: Any, journal: Any,
                 stop_file: Path | None = None):
        self.comm, self.sched, self.executor = comm, scheduler, executor
        self.progress, self.journal = progress, journal
        self.idle: deque[int] = deque()
        self.stopped: set[int] = set()
        self.stop_file = stop_file
        self.timeout_factor = 0.0  # set when limits are derived from estimates (engine.unit_timeout_s = 0)
        self.stop_requested = False
        self.fatal: str | None = None
        self._stop_checked = 0.0

    def _check_stop(self) -> None:
        """RUN/STOP (written e.g. by slurm/full_survey.sh before the time limit): hand out nothing new."""
        now = time.monotonic()
        if self.stop_file is None or self.stop_requested or now - self._stop_checked < 1.0:
            return
        self._stop_checked = now
        if self.stop_file.exists():
            self.stop_requested = True
            self.progress.line(f"stop requested ({self.stop_file}): no new units; waiting for the "
                               f"{len(self.sched.running)} running to finish")

    def _next(self) -> Task | None:
        if self.stop_requested or self.fatal:
            return None
        task = self.sched.next()
        if task is not None and self.timeout_factor:
            # A derived limit follows what units really take here: a busy or slow machine (plan
            # estimate x observed/estimated ratio) must not turn healthy units into timeouts.
            task.limit_s = max(task.limit_s, self.timeout_factor * task.cost * self.slowness())
        return task

    def slowness(self) -> float:
        """Median of measured wall / planned cost over the units computed so far (1 until 3 exist)."""
        ratios = sorted(o.wall_s / self.sched.tasks[k].cost for k, o in self.sched.outcomes.items()
                        if o.kind == "unit" and o.status == "done" and self.sched.tasks[k].cost > 0)
        return max(1.0, ratios[len(ratios) // 2]) if len(ratios) >= 3 else 1.0

    def _local(self, call: Callable[[], Any]) -> Any:
        """Run an executor call; a FatalRunError stops handing out work (the run ends with it)."""
        from dream_hpc.worker import FatalRunError

        try:
            return call()
        except FatalRunError as e:
            self.fatal = self.fatal or str(e)
            return None

    def _complete(self, oc: Any) -> None:
        self.progress.on_outcome(oc)
        self.sched.complete(oc)

    def _on_message(self, source: int, msg: tuple[str, Any]) -> None:
        kind, data = msg
        if kind == "ready":
            self.idle.append(source)
        elif kind == "result":
            self._complete(data)
            self.idle.append(source)
        elif kind == "progress":
            self.notify(*data)
        elif kind == "fatal":  # data = (task key, message); that rank now waits to be stopped
            self.sched.running.pop(data[0], None)
            self.fatal = self.fatal or data[1]
            self.idle.append(source)

    def _busy(self) -> bool:
        return bool(self.sched.running)

    def notify(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "start":
            self.progress.on_start(data["key"], data["stage"], tuple(data.get("verified", ())))
        elif kind == "stage":
            self.progress.on_stage(data["key"], data["stage"])
        elif kind == "stage_done":
            self.progress.on_stage_done(data["key"], data["stage"])

    def run(self) -> None:
        remote = self.comm.size - 1
        while True:
            # hand out work: our own worker first (no message latency), then ranks that asked
            self._check_stop()
            while self.executor is not None and not self.executor.busy and (task := self._next()):
                oc = self._local(lambda t=task: self.executor.start(t))
                if oc is not None:
                    self._complete(oc)
            while self.idle and (task := self._next()):
                dest = self.idle.popleft()
                self.comm.send(("task", task), dest)
                self.progress.on_start(task.key, "queued")
            if self.sched.finished or ((self.stop_requested or self.fatal) and not self._busy()):
                while self.idle:
                    dest = self.idle.popleft()
                    self.comm.send(("stop", None), dest)
                    self.stopped.add(dest)
                if len(self.stopped) == remote:
                    break
            # wait for something to happen: our worker's events, or messages
            if self.executor is not None and self.executor.busy:
                busy_task = self.executor.task
                oc = self._local(lambda: self.executor.poll(0.01 if remote else 1.0))
                if oc is None and self.fatal and not self.executor.busy:
                    self.sched.running.pop(busy_task.key, None)
                if oc is not None:
                    self._complete(oc)
            else:
                time.sleep(0.01)
            for source, msg in self.comm.poll():
                self._on_message(source, msg)
            self.progress.tick()


def serve(comm: Any, executor: Any) -> None:
    """Ranks other than 0: ask for a task, run it, report, until told to stop."""
    from dream_hpc.worker import FatalRunError

    comm.send(("ready", None), 0)
    while True:
        kind, task = comm.wait(0)
        if kind == "stop":
            return
        try:
            oc = executor.start(task)
            while oc is None:
                oc = executor.poll(1.0)
        except FatalRunError as e:
            comm.send(("fatal", (task.key, str(e))), 0)
            continue
        comm.send(("result", oc), 0)


# --- preparing a run (rank 0) ----------------------------------------------------------------
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def check_same_config(run: RunDir, cfg: SurveyConfig, anything_done: bool = True) -> None:
    """A resumed run must use the config it started with (else its units would mix two surveys).

    Until some stage has finished there is nothing to mix, so a corrected config simply replaces it.
    """
    if not run.config.is_file() or not anything_done:
        atomic_write_text(run.config, cfg.text)
        return
    recorded = parse_config(run.config.read_text(), run.config)
    a, b = _flatten(recorded.to_dict()), _flatten(cfg.to_dict())
    diffs = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diffs:
        shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise UserError(f"{cfg.source}: differs from the config this run started with ({run.config}): "
                        f"{shown}{more}; resume with the same config, or use a new --out")


def _stage_module() -> Any | None:
    from dream_hpc.worker import STAGES_ENV

    name = os.environ.get(STAGES_ENV)
    if not name:
        return None
    import importlib

    return importlib.import_module(name)


def plan_units(cfg: SurveyConfig) -> list[WorkUnit]:
    """The work units (and, with the real chain, the catalog checked against their footprint)."""
    dev = _stage_module()
    if dev is not None and hasattr(dev, "make_plan"):
        return dev.make_plan(cfg)
    from dream_hpc.survey import check_inputs, plan_and_check

    check_inputs(cfg)
    # Step overrides and the pipelines' references are checked by each worker at start-up
    # (worker.py), where jwst is imported anyway: importing it here would delay every rank's first
    # unit by seconds.
    units, _ = plan_and_check(cfg, pipelines=False)
    return units


def write_footprint(cfg: SurveyConfig, run: RunDir, units: list[WorkUnit]) -> None:
    """figures/footprint.png (as `dream-hpc plan --out` writes it); a figure never stops a run."""
    try:
        from dream_hpc import catalog
        from dream_hpc.plan import footprint_png

        sources = catalog.load_catalog(cfg, sorted({u.filter for u in units})).sources  # cached: already read
        footprint_png(cfg, units, run.figures / "footprint.png", (sources.ra, sources.dec))
    except Exception as e:
        logging.getLogger("dream_hpc").warning("footprint.png not written: %s: %s", type(e).__name__, e)


def record_plan(run: RunDir, cfg: SurveyConfig, units: list[WorkUnit]) -> None:
    """Write plan.json, or check that the recorded plan has the same units (else a clear error)."""
    import json

    from dream_hpc.status import read_plan

    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise UserError("the plan has duplicate unit ids (two exposures with the same jwst name): check "
                        "pointings and dithers in the config")
    recorded = read_plan(run)
    if recorded:
        added, removed = set(ids) - set(recorded), set(recorded) - set(ids)
        if added or removed:
            raise UserError(f"{run.plan}: the recorded plan differs from this config's plan ({len(added)} units "
                            f"added, {len(removed)} removed): the planning code or its inputs changed; use a new --out")
        return
    try:
        from dream_hpc.plan import summarize, write_plan

        write_plan(run.plan, units, summarize(cfg, units))
    except ImportError:
        atomic_write_text(run.plan, json.dumps({"units": [u.to_dict() for u in units]}, indent=1))


@dataclass
class Prepared:
    cfg: SurveyConfig
    run: RunDir
    units: list[WorkUnit]
    tasks: list[Task]
    view: Any


def prepare(config_path: Path, out: Path, mosaic: bool = True, compute_units: bool = True,
            filters: set[str] | None = None) -> Prepared:
    """Rank 0, under the run lock: check the config against the record, plan, read earlier attempts.

    `filters` keeps only those filters' units (and mosaics); `compute_units=False` only verifies
    units an earlier run finished (what `dream-hpc mosaic` needs before Image3)."""
    from dream_hpc.status import read_run

    cfg = load_config(config_path)
    run = RunDir.create(out)
    before = read_run(run)
    anything_done = (any(u.stages or u.done for u in before.units.values())
                     or any(m.data for m in before.mosaics.values()))
    check_same_config(run, cfg, anything_done)
    if not anything_done:
        run.plan.unlink(missing_ok=True)  # planned from a config that never produced anything
    units = plan_units(cfg)
    if not units:
        raise UserError(f"{config_path}: the plan has no units (check pointings, detectors and filter_pairs)")
    record_plan(run, cfg, units)
    if _stage_module() is None and not (run.figures / "footprint.png").is_file():
        write_footprint(cfg, run, units)
    if filters:
        planned_filters = sorted({u.filter.upper() for u in units})
        units = [u for u in units if u.filter.upper() in filters]
        if not units:
            raise UserError(f"{config_path}: no units in {', '.join(sorted(filters))} (this config's filters: "
                            f"{', '.join(planned_filters)})")
    tails = mosaic_tails(units) if mosaic else {}
    # Leftovers of writes cut short by a kill never count; we hold the lock, so nobody is writing them.
    for stale in [*run.exposures.glob(".tmp-*"), *run.mosaic.glob(".tmp-*")]:
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)  # a stage's scratch directory (Mirage, Image3)
        else:
            stale.unlink(missing_ok=True)
    view = read_run(run)
    tasks = []
    for u in units:
        cost = u.est_cpu_s if u.est_cpu_s > 0 else DEFAULT_UNIT_COST_S
        state = view.units.get(u.unit_id)
        recorded = {"done": state.done, "stages": state.stages} if state else {}
        tasks.append(Task(u.unit_id, "unit", cost, unit_time_limit(cfg, cost), unit=u, recorded=recorded,
                          tail=tails.get(u.filter, 0.0), verify_only=not compute_units))
    return Prepared(cfg, run, units, tasks, view)


def mosaic_factory(cfg: SurveyConfig, view: Any) -> MosaicFactory:
    def make(filt: str, ok: list[Task], outcomes: dict[str, Any]) -> Task:
        expected = {p: h for t in ok for p, h in outcomes[t.key].outputs.items() if p.endswith("_cal.fits")}
        cost = image3_seconds([t.unit for t in ok])
        limit = max(cfg.engine.min_timeout_s, cost * cfg.engine.timeout_factor)
        state = view.mosaics.get(filt)
        recorded = {"done": state.data} if state and state.data else {}
        return Task(f"mosaic_{filt}", "mosaic", cost, limit, filter=filt, units=[t.unit for t in ok],
                    recorded=recorded, expected_inputs=expected)

    return make


# --- the whole run ---------------------------------------------------------------------------
def _run_facts(cfg: SurveyConfig, run: RunDir, comm: Any, hosts: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    try:
        from dream_hpc.runinfo import collect

        facts = collect(cfg, run, mpi_size=comm.size, hosts=hosts)
    except ImportError:
        facts = {"config_sha256": cfg.sha256, "argv": list(sys.argv), "mpi_size": comm.size, "hosts": hosts}
    return {**facts, "launcher": comm.launcher, **extra}


def execute(config_path: str | Path, out: str | Path, mosaic: bool = True,
            coordinator_works: bool | None = None, stream: Any = None, compute_units: bool = True,
            filters: set[str] | None = None) -> int:
    """`dream-hpc run`: every unit (and, unless mosaic=False, one mosaic per filter); exit code.

    `compute_units=False` (`dream-hpc mosaic`): verify the units an earlier run finished and run
    only the mosaics; `filters` restricts the run to those filters."""
    from dream_hpc import mpi
    from dream_hpc.worker import WorkerProcess

    comm = mpi.world()
    # SIGTERM (scancel, srun at a time limit, mpiexec teardown): unwind, killing the worker, so the
    # journal shows the unit as interrupted and a rerun resumes it.
    signal.signal(signal.SIGTERM, _terminated)
    logging.getLogger("pysiaf").setLevel(logging.ERROR)  # "cannot check PRD online": offline by design
    config_path, out = Path(config_path).resolve(), Path(out).resolve()
    if not config_path.is_file():
        raise UserError(f"{config_path}: config file not found (check the path, e.g. config/demo.yaml)")
    # Start this rank's worker now: its jwst/Mirage imports overlap rank 0's preparation.
    early = None
    if comm.rank != 0 or comm.size == 1 or coordinator_works is not False:
        early = WorkerProcess(config_path)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: early.kill() if early is not None and early.events_fd >= 0 else None)
        error, prepared = None, None
        if comm.rank == 0:
            try:
                out.mkdir(parents=True, exist_ok=True)
                stack.enter_context(RunDir(out).lock(f"dream-hpc run (MPI size {comm.size})"))
                if (out / STOP_FILE).exists():
                    raise UserError(f"{out / STOP_FILE} exists (a request to stop this run: "
                                    f"{(out / STOP_FILE).read_text().strip()[:100]!r}); remove it to run")
                prepared = prepare(config_path, out, mosaic, compute_units,
                                   {f.upper() for f in filters} if filters else None)
            except (UserError, RunDirError, OSError, ValueError) as e:  # ConfigError is a ValueError
                error = str(e)
            except Exception as e:  # tell the other ranks before failing, so none waits forever
                comm.bcast(f"rank 0 failed while preparing the run: {type(e).__name__}: {e}")
                raise
        error = comm.bcast(error)
        if error:
            if comm.rank == 0:
                raise UserError(error)
            return 2
        hosts = comm.gather(socket.gethostname())
        if comm.rank != 0:
            return _rank_main(comm, config_path, out, early)
        assert prepared is not None
        works = comm.size == 1 or (prepared.cfg.engine.coordinator_works if coordinator_works is None
                                   else coordinator_works)
        if not works and early is not None:
            early.kill()
            early = None
        return _coordinate(comm, prepared, hosts or [], mosaic, early if works else None, stream, works)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _rank_main(comm: Any, config_path: Path, out: Path, worker: Any) -> int:
    from dream_hpc.journal import JournalWriter
    from dream_hpc.worker import Executor

    cfg = load_config(config_path)
    run = RunDir(out)
    journal = JournalWriter(run.journal, comm.rank)
    executor = Executor(cfg, run, journal, comm.rank, worker=worker,
                        notify=lambda kind, data: comm.send(("progress", (kind, data)), 0))
    try:
        serve(comm, executor)
    except BaseException:
        executor.shutdown(kill=True)
        raise
    finally:
        executor.shutdown()
        journal.close()
    return 0


def _coordinate(comm: Any, p: Prepared, hosts: list[str], mosaic: bool, worker: Any, stream: Any,
                works: bool) -> int:
    from dream_hpc.journal import JournalWriter
    from dream_hpc.status import Progress
    from dream_hpc.worker import Executor

    run, cfg = p.run, p.cfg
    journal = JournalWriter(run.journal, 0)
    filters = sorted({u.filter for u in p.units})
    order, predicted = choose_order(p.tasks, comm.size if works else max(comm.size - 1, 1))
    journal.write("run_start", None, **_run_facts(cfg, run, comm, hosts, {
        "n_units": len(p.units), "filters": filters, "mosaic": mosaic, "coordinator_works": works,
        "order": order, "predicted_makespan_s": predicted,
        "engine": {k: getattr(cfg.engine, k) for k in cfg.engine.__dataclass_fields__}}))
    progress = Progress({t.key: t.cost for t in p.tasks}, stream or sys.stderr, cfg.engine.progress_interval_s,
                        n_mosaics=len(filters) if mosaic else 0)
    sched = Scheduler(p.tasks, mosaic_factory(cfg, p.view) if mosaic else None, cfg.engine.allow_partial_mosaic)
    coordinator = Coordinator(comm, sched, None, progress, journal, stop_file=run.root / STOP_FILE)
    if cfg.engine.unit_timeout_s <= 0:
        coordinator.timeout_factor = cfg.engine.timeout_factor
    executor = None
    if works:
        executor = Executor(cfg, run, journal, 0, worker=worker, notify=coordinator.notify)
        coordinator.executor = executor
    try:
        coordinator.run()
    except BaseException:
        if executor is not None:
            executor.shutdown(kill=True)
        progress.close()
        if comm.size > 1:  # do not leave other ranks waiting forever
            sys.stderr.flush()
            comm.abort(1)
        raise
    if executor is not None:
        executor.shutdown()
    progress.close()
    for filt, why in sched.blocked.items():
        journal.write("mosaic_failed", None, filter=filt, step=None, error=why, blocked=True)
    outcomes = list(sched.outcomes.values())
    n_failed = sum(o.status not in ("done", "skipped", "missing") for o in outcomes) + len(sched.blocked)
    status = "error" if coordinator.fatal else "stopped" if coordinator.stop_requested else (
        "ok" if not n_failed else "failed")
    journal.write("run_end", None, status=status, n_done=sum(o.status == "done" for o in outcomes),
                  n_skipped=sum(o.status == "skipped" for o in outcomes), n_failed=n_failed,
                  n_missing=sum(o.status == "missing" for o in outcomes),
                  n_not_started=sched.pending, blocked=sorted(sched.blocked))
    journal.close()
    if coordinator.fatal:
        raise UserError(f"{coordinator.fatal} (no unit can run with this config; fix it and rerun the same command)")
    _report(run, sched, stream or sys.stderr)
    if coordinator.stop_requested:
        print(f"stopped on request ({run.root / STOP_FILE}): {sched.pending} tasks not started; remove the "
              "file and rerun the same command to resume", file=stream or sys.stderr)
        return EXIT_STOPPED
    return 0 if status == "ok" else 1


def _report(run: RunDir, sched: Scheduler, out: Any) -> None:
    from dream_hpc.status import fmt_duration

    try:
        from dream_hpc.timeline import write_timeline

        png = write_timeline(run, run.figures / "timeline.png")
        print(f"timeline: {png}", file=out)
    except Exception as e:  # a figure must never turn a finished run into a failed one
        print(f"timeline: not written ({type(e).__name__}: {e})", file=out)
    outcomes = list(sched.outcomes.values())
    bad = [o for o in outcomes if o.status not in ("done", "skipped", "missing")]
    units = [o for o in outcomes if o.kind == "unit"]
    missing = sorted(o.key for o in units if o.status == "missing")
    print(f"units: {sum(o.status == 'done' for o in units)} computed, {sum(o.status == 'skipped' for o in units)} "
          f"already done (checksums verified), {len(bad) - sum(o.kind == 'mosaic' for o in bad)} failed"
          + (f", {len(missing)} not finished (not computed by this command)" if missing else ""), file=out)
    for o in outcomes:
        if o.kind == "mosaic" and o.status in ("done", "skipped"):
            print(f"mosaic {o.key.removeprefix('mosaic_')}: {o.status} ({fmt_duration(o.wall_s)})", file=out)
    if bad:
        print(f"failures ({len(bad)}):", file=out)
        print(f"  {'task':40s} {'status':8s} {'stage':9s} {'step':18s} error", file=out)
        for o in sorted(bad, key=lambda o: o.key):
            log = f"logs/{o.key}.log" if o.kind == "unit" else f"logs/mosaic_{o.key.removeprefix('mosaic_')}.log"
            print(f"  {o.key:40s} {o.status:8s} {o.stage or '-':9s} {o.step or '-':18s} {o.error}  [{log}]", file=out)
    for why in sched.blocked.values():
        print(why, file=out)
    if bad or sched.blocked:
        print(f"rerun the same command to retry only what did not finish; `dream-hpc status {run.root}` "
              "shows the state at any time", file=out)


def completed_units(run: str | Path | RunDir) -> dict[str, dict[str, str]]:
    """Units whose journaled `unit_done` products are all on disk with their checksums (for `dream-hpc
    mosaic` after `run --no-mosaic`): unit id -> {relpath: sha256}."""
    from dream_hpc.status import read_run

    run = run if isinstance(run, RunDir) else RunDir(Path(run).resolve())
    return {uid: dict(u.done["outputs"]) for uid, u in read_run(run).units.items()
            if u.status == "done" and u.done and verify_outputs(run, u.done.get("outputs", {}))}


# --- measured costs (for `dream-hpc plan` advice) --------------------------------------------
def measured_unit_costs(run: str | Path | RunDir) -> dict[str, dict[str, Any]]:
    """Per unit, from the journal: wall and CPU seconds and peak memory, in total and per stage.

    ``{unit_id: {"wall_s", "cpu_s", "peak_rss_mb", "stages": {stage: {"wall_s", "cpu_s", "peak_rss_mb"}}}}``
    using each stage's latest record (only units with at least one finished stage appear).
    """
    from dream_hpc.status import read_run

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


# --- command ---------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    works = None if args.coordinator is None else args.coordinator == "works"
    return execute(args.config, args.out, mosaic=not args.no_mosaic, coordinator_works=works)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run every unit (and one Image3 per filter); serial, mpiexec or srun",
                       description="Run the survey's units with dynamic scheduling over MPI ranks (or in one "
                       "process without a launcher). Rerunning on the same --out resumes: only missing, "
                       "failed or incomplete units are redone.")
    p.add_argument("config", help="survey config (YAML)")
    p.add_argument("--out", required=True, help="run directory (created; resumed if it exists)")
    p.add_argument("--no-mosaic", action="store_true",
                   help="stop after the units (run `dream-hpc mosaic` later, e.g. as a separate Slurm job)")
    p.add_argument("--coordinator", choices=("works", "only"), default=None,
                   help="rank 0 also computes (works) or only hands out units (only); default: "
                   "engine.coordinator_works")
    p.set_defaults(func=_cmd_run)
