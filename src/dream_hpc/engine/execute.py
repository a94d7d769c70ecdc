"""`execute`: one survey run on this communicator (serial, `mpiexec` or `srun`), rank 0 and the rest.

Rank 0 prepares the run under the run lock (engine/prepare.py), chooses the task order
(engine/scheduler.py) and coordinates (engine/coordinator.py); every rank computes in its worker
subprocess (engine/executor.py, engine/worker.py) and journals what happened. The run's outcome is
returned as a `RunResult`, which the drivers (survey, mosaic, reproduce) turn into their reports.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core.errors import UserError
from dream_hpc.core.rundir import RunDir, RunDirError
from dream_hpc.engine.coordinator import Coordinator, serve
from dream_hpc.engine.prepare import STOP_FILE, Prepared, mosaic_factory, prepare
from dream_hpc.engine.scheduler import Scheduler, choose_order

EXIT_STOPPED = 3  # exit code after such a stop (the run is resumable)


def _run_facts(cfg: SurveyConfig, run: RunDir, comm: Any, hosts: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    from dream_hpc.provenance.facts import collect

    facts = collect(cfg, run, mpi_size=comm.size, hosts=hosts)
    return {**facts, "launcher": comm.launcher, **extra}


@dataclass
class RunResult:
    """What one `execute` did, for the driver that called it (rank 0; other ranks get status "rank")."""

    exit_code: int  # 0 ok, 1 something failed, EXIT_STOPPED stopped on request, 2 not started
    status: str  # ok | failed | stopped | rank
    run: RunDir
    outcomes: list[Any] = field(default_factory=list)  # engine.executor.Outcome per task that ended
    blocked: dict[str, str] = field(default_factory=dict)  # filter -> why its mosaic did not run

    @property
    def stopped(self) -> bool:
        return self.status == "stopped"


def execute(cfg: SurveyConfig, out: str | Path, mosaic: bool = True,
            coordinator_works: bool | None = None, stream: Any = None, compute_units: bool = True,
            filters: set[str] | None = None) -> RunResult:
    """Every unit (and, unless mosaic=False, one mosaic per filter) of `cfg` into run directory `out`.

    `compute_units=False` (`dream-hpc mosaic`): verify the units an earlier run finished and run
    only the mosaics; `filters` restricts the run to those filters. Every rank calls this with the
    config it parsed; the worker subprocesses read the same file (`cfg.source`)."""
    from dream_hpc.engine import mpi
    from dream_hpc.engine.executor import WorkerProcess

    if cfg.source is None or not Path(cfg.source).is_file():
        raise UserError(f"{cfg.source}: config file not found (check the path, e.g. config/demo.yaml)")
    comm = mpi.world()
    # SIGTERM (scancel, srun at a time limit, mpiexec teardown): unwind, killing the worker, so the
    # journal shows the unit as interrupted and a rerun resumes it.
    signal.signal(signal.SIGTERM, _terminated)
    logging.getLogger("pysiaf").setLevel(logging.ERROR)  # "cannot check PRD online": offline by design
    config_path, out = Path(cfg.source).resolve(), Path(out).resolve()
    # Start this rank's worker now: its jwst/Mirage imports overlap rank 0's preparation.
    early = None
    if comm.rank != 0 or comm.size == 1 or coordinator_works is not False:
        early = WorkerProcess(config_path)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: early.kill() if early is not None and early.events_fd >= 0 else None)
        error, prepared = None, None
        if comm.rank == 0:
            created = False
            try:
                from dream_hpc.core.rundir import refuse_unsafe_out

                refuse_unsafe_out(out)
                created = not out.exists()
                out.mkdir(parents=True, exist_ok=True)
                stack.enter_context(RunDir(out).lock(f"dream-hpc run (MPI size {comm.size})"))
                if (out / STOP_FILE).exists():
                    raise UserError(f"{out / STOP_FILE} exists (a request to stop this run: "
                                    f"{(out / STOP_FILE).read_text().strip()[:100]!r}); remove it to run")
                prepared = prepare(cfg, out, mosaic, compute_units,
                                   {f.upper() for f in filters} if filters else None)
            except (UserError, RunDirError, OSError, ValueError) as e:  # ConfigError is a ValueError
                error = str(e)
                if created:  # refused before any compute: leave no half-made run directory behind
                    shutil.rmtree(out, ignore_errors=True)
            except Exception as e:  # tell the other ranks before failing, so none waits forever
                comm.bcast(f"rank 0 failed while preparing the run: {type(e).__name__}: {e}")
                raise
        error = comm.bcast(error)
        if error:
            if comm.rank == 0:
                raise UserError(error)
            return RunResult(2, "rank", RunDir(out))
        hosts = comm.gather(socket.gethostname())
        if comm.rank != 0:
            _rank_main(comm, cfg, out, early)
            return RunResult(0, "rank", RunDir(out))
        assert prepared is not None
        works = comm.size == 1 or (cfg.engine.coordinator_works if coordinator_works is None
                                   else coordinator_works)
        if not works and early is not None:
            early.kill()
            early = None
        return _coordinate(comm, prepared, hosts or [], mosaic, early if works else None, stream, works)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _rank_main(comm: Any, cfg: SurveyConfig, out: Path, worker: Any) -> None:
    from dream_hpc.core.journal import JournalWriter
    from dream_hpc.engine.executor import Executor

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


def _coordinate(comm: Any, p: Prepared, hosts: list[str], mosaic: bool, worker: Any, stream: Any,
                works: bool) -> RunResult:
    from dream_hpc.core.journal import JournalWriter
    from dream_hpc.engine.executor import Executor
    from dream_hpc.engine.progress import Progress

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
    sched = Scheduler(p.tasks, mosaic_factory(cfg, p.view, run) if mosaic else None, cfg.engine.allow_partial_mosaic)
    _hold_back(p, sched, journal, progress)
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
        return RunResult(EXIT_STOPPED, status, run, outcomes, dict(sched.blocked))
    return RunResult(0 if status == "ok" else 1, status, run, outcomes, dict(sched.blocked))


def _hold_back(p: Prepared, sched: Scheduler, journal: Any, progress: Any) -> None:
    """Units a bad reference holds back (engine/prepare.py hold_back) end as failed before any
    compute, naming the file and its fix; nothing is handed out for them."""
    import time

    from dream_hpc.core.workunit import STAGES
    from dream_hpc.engine.executor import Outcome

    for key, why in sorted(p.held.items()):
        task = sched.tasks[key]
        done = task.recorded.get("stages") or {}
        stage = next((s for s in STAGES if s not in done), STAGES[0])
        journal.write("unit_failed", key, stage=stage, step="references", error=why)
        now = time.time()
        oc = Outcome(key, "unit", "failed", stage=stage, step="references", error=why, start=now, end=now)
        progress.on_outcome(oc)
        sched.hold(oc)


def _report(run: RunDir, sched: Scheduler, out: Any) -> None:
    from dream_hpc.core.runstate import fmt_duration

    try:
        from dream_hpc.engine.timeline import write_timeline

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
