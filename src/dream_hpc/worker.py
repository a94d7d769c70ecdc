"""The compute subprocess of a rank, and the rank-side executor that drives it, journals and times out.

Each rank runs science code only in a long-lived worker subprocess (started with `subprocess`, never
`os.fork` after MPI_Init), which imports jwst and Mirage once, receives tasks as JSON lines on its
stdin and streams events back on a dedicated pipe. The rank process stays responsive: it journals
every event, enforces the unit's time limit, and when a unit hangs or the worker dies it kills the
worker, records where it was, and starts a fresh one for the next unit.

Test hook (documented, off unless set): ``DREAM_HPC_TEST_FAULT="<unit_id>:<stage>[:<step>]:<action>"``
(several separated by ``,``; ``unit_id`` may be ``*``, stage may be ``mosaic`` with the filter as
unit id). Actions: ``raise`` (an exception inside the named jwst step, or at stage start),
``hang`` (sleeps there for a day), ``truncate`` (after the stage succeeds, cut its product to half:
the next stage then meets a genuinely corrupt file). Used by the engine tests to fail real units.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULT_ENV = "DREAM_HPC_TEST_FAULT"
STAGES_ENV = "DREAM_HPC_STAGE_MODULE"  # development only: a module with run_stage/run_mosaic to use instead
HANG_SECONDS = 86400.0


# --- memory and CPU accounting (used in the worker) ------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), else since process start (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# --- the worker subprocess --------------------------------------------------------------------
class _Events:
    """Writes one JSON line per event on the pipe to the rank."""

    def __init__(self, fd: int):
        self.fd = fd

    def send(self, ev: str, **data: Any) -> None:
        line = json.dumps({"ev": ev, "t": time.time(), **data}, default=str) + "\n"
        os.write(self.fd, line.encode())


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us if the rank dies (e.g. SIGKILL): no orphan keeps writing."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the rank died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def output_to(log_path: Path):
    """Send everything written to fd 1 and 2 (Python, C, Mirage prints, jwst logs) to `log_path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


@dataclass
class _Fault:
    unit: str
    stage: str
    step: str | None
    action: str


def parse_faults(text: str) -> list[_Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        parts = item.split(":")
        if len(parts) == 3:
            parts.insert(2, "")
        if len(parts) != 4 or parts[3] not in ("raise", "hang", "truncate"):
            raise ValueError(f"{FAULT_ENV}: {item!r} is not <unit>:<stage>[:<step>]:<raise|hang|truncate>")
        faults.append(_Fault(parts[0], parts[1], parts[2] or None, parts[3]))
    return faults


class _Worker:
    """State of the worker process: the current task (for the fault hook) and the event pipe."""

    def __init__(self, events: _Events, config_path: str, run_root: str):
        from dream_hpc.config import load_config
        from dream_hpc.rundir import RunDir

        self.events = events
        self.cfg = load_config(config_path)
        self.run = RunDir(Path(run_root))
        self.current: tuple[str, str] = ("", "")  # (unit id or filter, stage)
        self.faults = parse_faults(os.environ.get(FAULT_ENV, ""))
        self.stage_module = os.environ.get(STAGES_ENV) or None

    # The test hook: act when the running (unit, stage[, step]) matches a configured fault.
    def _matching(self, stage: str, step: str | None) -> list[_Fault]:
        unit, current_stage = self.current
        return [f for f in self.faults if f.unit in ("*", unit) and f.stage == (stage or current_stage)
                and f.step == step]

    def _act(self, fault: _Fault) -> None:
        if fault.action == "raise":
            raise RuntimeError(f"injected test fault ({FAULT_ENV}) in {fault.stage}"
                               + (f"/{fault.step}" if fault.step else ""))
        if fault.action == "hang":
            time.sleep(HANG_SECONDS)

    def install_step_faults(self) -> None:
        """Wrap the `process` method of each named jwst step so the fault fires inside the real step."""
        named = {f.step for f in self.faults if f.step and f.action != "truncate"}
        if not named:
            return
        import importlib

        from jwst.stpipe.integration import get_steps

        classes = {alias: path for path, alias, _ in get_steps()}
        for step in named:
            path = classes.get(step)
            if path is None:
                raise ValueError(f"{FAULT_ENV}: unknown jwst step {step!r}")
            module, name = path.rsplit(".", 1)
            cls = getattr(importlib.import_module(module), name)
            original = cls.process

            def process(step_self, *args, _original=original, _step=step, **kwargs):
                for fault in self._matching("", _step):
                    self._act(fault)
                return _original(step_self, *args, **kwargs)

            cls.process = process

    def _stage_runner(self) -> tuple[Callable, Callable]:
        if self.stage_module:
            import importlib

            mod = importlib.import_module(self.stage_module)
            return mod.run_stage, mod.run_mosaic
        from dream_hpc.stages import run_stage

        def run_mosaic(*a: Any) -> Any:
            from dream_hpc.mosaic import run_mosaic as real

            return real(*a)

        return run_stage, run_mosaic

    def _context(self) -> Any:
        from dream_hpc.stages import StageContext

        def emit(kind: str, **data: Any) -> None:
            self.events.send(kind, **data)

        return StageContext(cfg=self.cfg, run=self.run, emit=emit, log=logging.getLogger("dream_hpc.unit"))

    def _run_one(self, stage: str, call: Callable[[], Any]) -> Any:
        """Run one stage with timing, memory and fault hook; returns the StageResult or None on failure."""
        self.current = (self.current[0], stage)
        self.events.send("stage_start", stage=stage)
        reset_peak_rss()
        wall0, cpu0 = time.time(), cpu_seconds()
        try:
            for fault in self._matching(stage, None):
                if fault.action != "truncate":
                    self._act(fault)
            result = call()
        except BaseException as e:  # SystemExit too: Mirage calls sys.exit on some errors
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc()
            msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:500] if str(e) else type(e).__name__
            self.events.send("stage_failed", stage=stage, error=msg)
            return None
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        # headers change every run; this is what lets another cluster's run be checked against the
        # record alone (`compare` without the original files). Read back while in the page cache.
        from dream_hpc.prov_digest import science_digests

        data["science_sha256"] = science_digests(self.run.root, data.get("outputs", {}))
        self.events.send("stage_done", stage=stage, result=data, wall_s=time.time() - wall0,
                         cpu_s=cpu_seconds() - cpu0, peak_rss_mb=peak_rss_mb(), start=wall0)
        for fault in self._matching(stage, None):
            if fault.action == "truncate":
                for rel in data.get("outputs", {}):
                    path = self.run.root / rel
                    os.truncate(path, path.stat().st_size // 2)
        return result

    def handle(self, msg: dict[str, Any]) -> None:
        from dream_hpc.workunit import WorkUnit

        run_stage, run_mosaic = self._stage_runner()
        ctx = self._context()
        with output_to(Path(msg["log"])):
            print(f"==== dream-hpc {msg['op']} {msg.get('key')} on {os.uname().nodename} pid {os.getpid()} "
                  f"at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
            if msg["op"] == "unit":
                unit = WorkUnit.from_dict(msg["unit"])
                self.current = (unit.unit_id, "")
                for stage in msg["stages"]:
                    if self._run_one(stage, lambda s=stage: run_stage(s, unit, ctx)) is None:
                        break
            elif msg["op"] == "mosaic":
                units = [WorkUnit.from_dict(d) for d in msg["units"]]
                self.current = (msg["filter"], "mosaic")
                self._run_one("mosaic", lambda: run_mosaic(msg["filter"], units, ctx))
        self.events.send("task_end")


@contextlib.contextmanager
def _quiet(*names: str):
    """Only warnings and errors from these loggers while the block runs."""
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def _preload() -> float:
    """Import jwst and Mirage once per worker, so units pay no import time."""
    t0 = time.time()
    for module in ("jwst.pipeline", "dream_hpc.simulate", "dream_hpc.calibrate", "dream_hpc.mosaic"):
        with contextlib.suppress(ImportError):
            __import__(module)
    # Mirage through its guard only: a plain import runs its logging.config.dictConfig, which
    # disables jwst's loggers (their records would vanish from the unit logs) and opens
    # mirage_latest.log in the working directory.
    with contextlib.suppress(ImportError):
        from dream_hpc.simulate import import_mirage

        import_mirage()
    return time.time() - t0


def worker_main(argv: list[str]) -> int:
    """Entry of `python -m dream_hpc.worker EVENTS_FD CONFIG`: set up offline, preload, serve tasks."""
    events = _Events(int(argv[0]))
    config_path = argv[1]
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the rank decides; Ctrl-C must not kill a unit midway
    from dream_hpc import offline
    from dream_hpc.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as e:
        events.send("fatal", error=str(e))
        return 2
    refs = cfg.references
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
    offline.forbid_network()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    logging.getLogger("pysiaf").setLevel(logging.ERROR)  # "cannot check PRD against online version": offline by design
    import_s = _preload()
    worker: _Worker | None = None
    events.send("ready", import_s=import_s, pid=os.getpid())
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "exit":
            break
        if msg["op"] == "init":
            worker = _Worker(events, config_path, msg["run"])
            try:  # once per worker, with jwst already imported: a bad override or a reference missing from
                # this node's CRDS cache stops the run before any compute, in one line
                if not worker.stage_module:
                    from dream_hpc.params import validate_step_overrides
                    from dream_hpc.plan import load_plan
                    from dream_hpc.survey import check_references

                    validate_step_overrides(worker.cfg)
                    with _quiet("stpipe", "jwst", "stcal"):  # "... instance created" x 60, outside any unit log
                        check_references(worker.cfg, load_plan(worker.run.plan))
                worker.install_step_faults()
            except Exception as e:
                events.send("fatal", error=str(e) or type(e).__name__)
                return 2
            continue
        assert worker is not None, "init must come first"
        worker.handle(msg)
    return 0


# --- the rank side ----------------------------------------------------------------------------
class FatalRunError(RuntimeError):
    """A problem no unit can get past (e.g. an invalid step parameter): the run stops with it."""


class WorkerProcess:
    """One worker subprocess as seen from its rank: send tasks, read events, kill."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None):
        self.config_path = config_path
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dream_hpc.worker", str(write_fd), str(config_path)],
            stdin=subprocess.PIPE, stdout=2, pass_fds=(write_fd,),  # its prints: the rank's stderr
            env={**os.environ, **(env or {})}, text=True)
        os.close(write_fd)
        self.events_fd = read_fd
        self._buffer = b""
        self.started = time.time()
        self.ready_at: float | None = None
        self.import_s = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg, default=str) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float) -> tuple[list[dict[str, Any]], bool]:
        """Events available within `timeout` seconds, and whether the worker is gone (pipe closed)."""
        out: list[dict[str, Any]] = []
        ready, _, _ = select.select([self.events_fd], [], [], max(timeout, 0.0))
        closed = False
        while ready:
            chunk = os.read(self.events_fd, 1 << 16)
            if not chunk:
                closed = True
                break
            self._buffer += chunk
            ready, _, _ = select.select([self.events_fd], [], [], 0)
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            ev = json.loads(line)
            if ev["ev"] == "ready":
                self.ready_at, self.import_s = ev["t"], ev["import_s"]
            out.append(ev)
        return out, closed

    def exit_description(self) -> str:
        code = self.proc.wait(timeout=30)
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (killed: often the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"worker process died with {name}{hint}"
        return f"worker process exited with code {code}"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        self.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.send({"op": "exit"})
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self.close()

    def close(self) -> None:
        if self.events_fd >= 0:
            os.close(self.events_fd)
            self.events_fd = -1


@dataclass
class Outcome:
    """What became of one task on a rank; small enough to send to rank 0."""

    key: str
    kind: str  # unit | mosaic
    status: str  # done | skipped | failed | timeout | missing (verify-only task of an unfinished unit)
    rank: int = 0
    stage: str | None = None
    step: str | None = None
    error: str | None = None
    start: float = 0.0
    end: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    step_s: float = 0.0  # time inside Mirage phases / jwst steps (for the overhead figure)
    peak_rss_mb: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)  # relpath -> sha256 (cal / mosaic products)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {start, end}


class Executor:
    """Runs tasks on this rank's worker: journals every event, enforces the time limit, restarts."""

    def __init__(self, cfg: Any, run: Any, journal: Any, rank: int,
                 notify: Callable[[str, dict[str, Any]], None] | None = None, worker: WorkerProcess | None = None):
        self.cfg, self.run, self.journal, self.rank = cfg, run, journal, rank
        self.notify = notify or (lambda kind, data: None)
        self.worker = worker
        self.initialised = False
        self.task: Any = None
        self.outcome: Outcome | None = None
        self.deadline = 0.0
        self.open_steps: list[str] = []
        self.failed_step: str | None = None
        self.failure: tuple[str, str | None] | None = None
        self.step_started: dict[str, float] = {}
        self.stage_info: dict[str, Any] = {}

    # -- lifecycle --
    def _ensure_worker(self) -> WorkerProcess:
        if self.worker is None or self.worker.proc.poll() is not None:
            if self.worker is not None:
                self.worker.close()
            self.worker = WorkerProcess(self.cfg.source)
            self.initialised = False
        if not self.initialised:
            self.worker.send({"op": "init", "run": str(self.run.root)})
            self.initialised = True
        return self.worker

    def shutdown(self, kill: bool = False) -> None:
        """Stop the worker: politely between tasks, at once (kill) when the rank is interrupted."""
        if self.worker is not None:
            self.worker.kill() if kill else self.worker.stop()
            self.worker = None

    @property
    def busy(self) -> bool:
        return self.task is not None

    # -- one task --
    def start(self, task: Any) -> Outcome | None:
        """Begin `task`; returns an Outcome at once when nothing needs computing (verified resume)."""
        now = time.time()
        self.task = task
        self.open_steps, self.step_started, self.stage_info = [], {}, {}
        self.failed_step: str | None = None
        self.failure: tuple[str, str | None] | None = None
        self.outcome = Outcome(task.key, task.kind, "running", rank=self.rank, start=now)
        todo, verified = task.resume_plan(self.run)
        if not todo:
            self.outcome.outputs = verified
            if task.kind == "unit" and task.recorded.get("done") is None:  # killed after its last stage
                self.journal.write("unit_done", task.key, outputs=verified, wall_s=0.0, cpu_s=0.0,
                                   peak_rss_mb=0.0, step_s=0.0, resumed=True)
            return self._finish("skipped")
        if getattr(task, "verify_only", False):  # `dream-hpc mosaic` uses finished units, computes none
            self.outcome.stage = todo[0]
            self.outcome.error = f"not finished (its {todo[0]} stage and later): compute it with `dream-hpc run`"
            return self._finish("missing")
        self.outcome.outputs = dict(verified)
        log = self.run.logs / (f"{task.key}.log" if task.kind == "unit" else f"mosaic_{task.filter}.log")
        self.deadline = now + task.limit_s
        worker = self._ensure_worker()
        if task.kind == "unit":
            self.journal.write("unit_start", task.key, stage=todo[0], stages=list(todo), limit_s=task.limit_s,
                               log=self.run.rel(log), worker_pid=worker.pid)
            worker.send({"op": "unit", "key": task.key, "unit": task.unit.to_dict(), "stages": list(todo),
                         "log": str(log)})
        else:
            self.journal.write("mosaic_start", None, filter=task.filter, units=[u.unit_id for u in task.units],
                               limit_s=task.limit_s, log=self.run.rel(log), worker_pid=worker.pid)
            worker.send({"op": "mosaic", "key": task.key, "filter": task.filter,
                         "units": [u.to_dict() for u in task.units], "log": str(log)})
        self.notify("start", {"key": task.key, "kind": task.kind, "stage": todo[0],
                              "verified": list(task.verified_stages)})
        return None

    def poll(self, timeout: float) -> Outcome | None:
        """Wait up to `timeout` s for progress of the current task; its Outcome when it ends."""
        if self.task is None:
            return None
        assert self.worker is not None
        events, closed = self.worker.read(min(timeout, max(self.deadline - time.time(), 0.0)))
        for i, ev in enumerate(events):
            done = self._on_event(ev)
            if done is not None:
                if events[i + 1:]:  # the protocol ends a task with task_end, so nothing should follow
                    raise RuntimeError(f"worker sent events after the end of {done.key}: {events[i + 1:]}")
                return done
        if closed:  # the worker died under us (OOM killer, segfault, os._exit)
            why = self.worker.exit_description()
            never_started = self.worker.ready_at is None
            self.worker.close()
            self.worker = None
            oc = self._fail("failed", why)
            if never_started:  # it died importing jwst/Mirage: every unit would, so stop the run
                raise FatalRunError(f"the worker process could not start on rank {self.rank} ({why}); its "
                                    "error is above in this job's output (check the environment: "
                                    "`dream-hpc versions --check`)")
            return oc
        if time.time() >= self.deadline:
            self.worker.kill()
            self.worker = None
            return self._fail("timeout", f"stopped after exceeding its time limit of {self.task.limit_s:.0f} s")
        return None

    def _current_stage(self) -> str | None:
        return self.stage_info.get("stage")

    def _on_event(self, ev: dict[str, Any]) -> Outcome | None:
        kind, task, oc = ev["ev"], self.task, self.outcome
        assert oc is not None
        unit_key = task.key if task.kind == "unit" else None
        if kind == "step":
            step, status = ev.get("step"), ev.get("status")
            if unit_key:
                self.journal.write("step", unit_key, stage=ev.get("stage"), step=step, status=status)
            else:
                self.journal.write("step", None, stage=ev.get("stage") or "mosaic", filter=task.filter,
                                   step=step, status=status)
            if status == "start":
                self.open_steps.append(step)
                self.step_started[step] = ev["t"]
            elif status == "failed":
                self.failed_step = step
            if status in ("done", "failed"):
                if step in self.open_steps:
                    self.open_steps.remove(step)
                if step in self.step_started:
                    oc.step_s += ev["t"] - self.step_started.pop(step)
        elif kind == "stage_start":
            self.stage_info = {"stage": ev["stage"], "start": ev["t"]}
            self.open_steps = []
            self.notify("stage", {"key": task.key, "stage": ev["stage"]})
        elif kind == "stage_done":
            self._stage_done(ev)
        elif kind == "stage_failed":  # the task ends with the worker's task_end, which follows
            self.failure = (ev["error"], self.failed_step or (self.open_steps[-1] if self.open_steps else None))
        elif kind == "task_end":
            if self.failure is not None:
                return self._fail("failed", self.failure[0], step=self.failure[1])
            return self._task_end()
        elif kind == "ready":  # the worker's imports do not count against the unit's time limit
            self.deadline = max(self.deadline, ev["t"] + task.limit_s)
        elif kind == "fatal":  # the configuration cannot work for any unit: stop the run, not just this unit
            self._fail("failed", ev["error"])
            raise FatalRunError(ev["error"])
        return None

    def _stage_done(self, ev: dict[str, Any]) -> None:
        task, oc = self.task, self.outcome
        r = ev["result"]
        stage = ev["stage"]
        oc.cpu_s += ev["cpu_s"]
        oc.peak_rss_mb = max(oc.peak_rss_mb, ev["peak_rss_mb"])
        oc.stages[stage] = {"start": ev["start"], "end": ev["t"]}
        oc.outputs.update(r.get("outputs", {}))
        common = dict(inputs=r.get("inputs", {}), outputs=r.get("outputs", {}), refs=r.get("refs", {}),
                      ref_sha256=r.get("ref_sha256", {}), params=r.get("params", {}),
                      wall_s=ev["wall_s"], cpu_s=ev["cpu_s"], peak_rss_mb=ev["peak_rss_mb"],
                      start=_iso(ev["start"]), step_times=r.get("step_times", {}), extra=r.get("extra", {}),
                      science_sha256=r.get("science_sha256", {}))
        if task.kind == "unit":
            self.journal.write("stage_done", task.key, stage=stage, seeds=r.get("seeds", {}), **common)
        else:
            common.pop("ref_sha256")
            self.journal.write("mosaic_done", None, filter=task.filter, asn=r.get("extra", {}).get("asn"),
                               ref_sha256=r.get("ref_sha256", {}), **common)
        self.notify("stage_done", {"key": task.key, "stage": stage})

    def _task_end(self) -> Outcome:
        task, oc = self.task, self.outcome
        expected = task.stages_expected()
        if any(s not in oc.stages for s in expected if s not in task.verified_stages):
            return self._fail("failed", "the worker ended the task without finishing every stage")
        if task.kind == "unit":
            if not self.cfg.engine.keep_intermediate:
                oc.outputs = _drop_intermediates(self.run, oc.outputs)
            self.journal.write("unit_done", task.key, outputs=oc.outputs, wall_s=time.time() - oc.start,
                               cpu_s=oc.cpu_s, peak_rss_mb=oc.peak_rss_mb, step_s=oc.step_s)
        return self._finish("done")

    def _fail(self, status: str, error: str, step: str | None = None) -> Outcome:
        task, oc = self.task, self.outcome
        stage = self._current_stage() or (task.stages_expected()[0] if task.kind == "unit" else "mosaic")
        step = step or (self.open_steps[-1] if self.open_steps else None)
        oc.stage, oc.step, oc.error = stage, step, error
        if task.kind == "unit":
            if status == "timeout":
                self.journal.write("unit_timeout", task.key, stage=stage, step=step, limit_s=task.limit_s,
                                   error=error)
            else:
                self.journal.write("unit_failed", task.key, stage=stage, step=step, error=error)
        else:
            self.journal.write("mosaic_failed", None, filter=task.filter, step=step, error=error,
                               timeout=status == "timeout")
        if "start" in self.stage_info:
            oc.stages[stage] = {"start": self.stage_info["start"], "end": time.time(), "failed": True}
        return self._finish(status)

    def _finish(self, status: str) -> Outcome:
        oc = self.outcome
        assert oc is not None
        oc.status, oc.end = status, time.time()
        oc.wall_s = oc.end - oc.start
        self.task, self.outcome = None, None
        return oc


def _iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def _drop_intermediates(run: Any, outputs: dict[str, str]) -> dict[str, str]:
    """keep_intermediate=false: remove *_uncal and *_rate once the unit is done; keep what remains."""
    kept = {}
    for rel, sha in outputs.items():
        if rel.endswith(("_uncal.fits", "_rate.fits")):
            (run.root / rel).unlink(missing_ok=True)
        else:
            kept[rel] = sha
    return kept


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
