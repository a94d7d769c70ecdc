"""The compute subprocess of a rank: imports the stage set once, runs one task at a time, streams events.

Each rank runs science code only in a long-lived worker subprocess (started with `subprocess`, never
`os.fork` after MPI_Init), which imports jwst and Mirage once, receives tasks as JSON lines on its
stdin and streams events back on a dedicated pipe. The rank process stays responsive: it journals
every event, enforces the unit's time limit, and when a unit hangs or the worker dies it kills the
worker, records where it was, and starts a fresh one for the next unit.

Test hook (documented, off unless set): ``DREAM_HPC_TEST_FAULT="<unit_id>:<stage>[:<step>]:<action>"``
(several separated by ``,``; ``unit_id`` may be ``*``, stage may be ``mosaic`` with the filter as
unit id). Actions: ``raise`` (an exception inside the named jwst step, or at stage start),
``hang`` (sleeps there for a day), ``truncate`` (after the stage succeeds, cut its product to half:
the next stage then meets a genuinely corrupt file), ``kill`` (SIGKILL the rank and this worker
there: a node lost mid-stage), ``full`` (fill the small test filesystem holding the run there, so
the stage's own writes meet a real ENOSPC; see core/faults.py, which also covers the writes of
provenance.h5 and summary.json). Used by the engine and fault tests to fail real units.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULT_ENV = "DREAM_HPC_TEST_FAULT"
REAL_STAGES = "dream_hpc.stages.chain"  # the stage set (stages/contract.py); tests pass a stand-in
HANG_SECONDS = 86400.0
FAULT_ACTIONS = ("raise", "hang", "truncate", "kill", "full")


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
        with contextlib.suppress(OSError):  # a full disk must not hide the stage's own outcome
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
        if len(parts) != 4 or parts[3] not in FAULT_ACTIONS:
            raise ValueError(f"{FAULT_ENV}: {item!r} is not <unit>:<stage>[:<step>]:<{'|'.join(FAULT_ACTIONS)}>")
        faults.append(_Fault(parts[0], parts[1], parts[2] or None, parts[3]))
    return faults


class _Worker:
    """State of the worker process: the current task (for the fault hook) and the event pipe."""

    def __init__(self, events: _Events, cfg: Any, run_root: str, stages: Any):
        from dream_hpc.core.rundir import RunDir

        self.events = events
        self.cfg = cfg
        self.run = RunDir(Path(run_root))
        self.stages = stages  # the stage set module (stages/contract.py, or a test's stand-in)
        self.current: tuple[str, str] = ("", "")  # (unit id or filter, stage)
        self.unit: Any = None  # the WorkUnit running (None for a mosaic)
        self.last_step: str | None = None  # the jwst step or Mirage phase last started
        self.faults = parse_faults(os.environ.get(FAULT_ENV, ""))

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
        if fault.action == "kill":
            from dream_hpc.core.faults import kill_now

            kill_now(also_parent=True)
        if fault.action == "full":
            from dream_hpc.core.faults import fill_filesystem

            fill_filesystem(self.run.root)

    def install_step_faults(self) -> None:
        """Wrap the `process` method of each named jwst step so the fault fires inside the real step."""
        named = {f.step for f in self.faults if f.step and f.action in ("raise", "hang")}
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

    def _context(self) -> Any:
        from dream_hpc.stages.contract import StageContext

        def emit(kind: str, **data: Any) -> None:
            if kind == "step" and data.get("status") == "start":
                self.last_step = data.get("step")
            self.events.send(kind, **data)
            if kind == "step" and data.get("status") == "start":
                # kill / full at a named jwst step or Mirage phase (e.g. `save`, `obs_generator`),
                # as the stage reaches it
                for fault in self._matching("", data.get("step")):
                    if fault.action in ("kill", "full"):
                        self._act(fault)

        return StageContext(cfg=self.cfg, run=self.run, emit=emit, log=logging.getLogger("dream_hpc.unit"))

    def _run_one(self, stage: str, call: Callable[[], Any]) -> Any:
        """Run one stage with timing, memory and fault hook; returns the StageResult or None on failure."""
        self.current = (self.current[0], stage)
        self.last_step = None
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
            with contextlib.suppress(OSError):  # the log's disk may be the full one
                traceback.print_exc()
            msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:500] if str(e) else type(e).__name__
            refs = self._step_references(stage)
            if refs:
                with contextlib.suppress(OSError):
                    print(refs, flush=True)
                msg = f"{msg} [{refs[:600]}]"
            self.events.send("stage_failed", stage=stage, error=msg)
            return None
        data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
        # headers change every run; this is what lets another cluster's run be checked against the
        # record alone (`compare` without the original files). Read back while in the page cache.
        from dream_hpc.provenance.digest import science_digests

        data["science_sha256"] = science_digests(self.run.root, data.get("outputs", {}))
        self.events.send("stage_done", stage=stage, result=data, wall_s=time.time() - wall0,
                         cpu_s=cpu_seconds() - cpu0, peak_rss_mb=peak_rss_mb(), start=wall0)
        for fault in self._matching(stage, None):
            if fault.action == "truncate":
                for rel in data.get("outputs", {}):
                    path = self.run.root / rel
                    os.truncate(path, path.stat().st_size // 2)
        return result

    def _step_references(self, stage: str) -> str:
        """The references the failed jwst step used and whether each verifies (stage set permitting)."""
        describe = getattr(self.stages, "describe_failure", None)
        if describe is None or self.unit is None:
            return ""
        try:
            return describe(self.cfg, self.unit, stage, self.last_step)
        except Exception as e:  # never hide the stage's own error
            return f"references not described ({type(e).__name__}: {e})"

    def handle(self, msg: dict[str, Any]) -> None:
        from dream_hpc.core.workunit import WorkUnit

        run_stage, run_mosaic = self.stages.run_stage, self.stages.run_mosaic
        ctx = self._context()
        with output_to(Path(msg["log"])):
            with contextlib.suppress(OSError):
                print(f"==== dream-hpc {msg['op']} {msg.get('key')} on {os.uname().nodename} pid {os.getpid()} "
                      f"at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
            if msg["op"] == "unit":
                unit = WorkUnit.from_dict(msg["unit"])
                self.current, self.unit = (unit.unit_id, ""), unit
                for stage in msg["stages"]:
                    if self._run_one(stage, lambda s=stage: run_stage(s, unit, ctx)) is None:
                        break
            elif msg["op"] == "mosaic":
                units = [WorkUnit.from_dict(d) for d in msg["units"]]
                self.current, self.unit = (msg["filter"], "mosaic"), None
                if "spec" in msg:  # one task of a tiled mosaic (engine/mosaic_graph.py)
                    self._run_one("mosaic", lambda: self.stages.run_mosaic_task(msg["spec"], units, ctx))
                else:
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


def worker_main(argv: list[str]) -> int:
    """Entry of `python -m dream_hpc.engine.worker EVENTS_FD CONFIG [STAGE_SET]`: set up offline, preload,
    serve tasks."""
    import importlib

    events = _Events(int(argv[0]))
    config_path = argv[1]
    stage_set = argv[2] if len(argv) > 2 else REAL_STAGES
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the rank decides; Ctrl-C must not kill a unit midway
    from dream_hpc.config import ConfigError, load_config
    from dream_hpc.core import offline

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
    t0 = time.time()
    stages = importlib.import_module(stage_set)
    stages.preload()
    import_s = time.time() - t0
    worker: _Worker | None = None
    events.send("ready", import_s=import_s, pid=os.getpid())
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["op"] == "exit":
            break
        if msg["op"] == "init":
            worker = _Worker(events, cfg, msg["run"], stages)
            try:
                with _quiet("stpipe", "jwst", "stcal"):  # "... instance created" x 60, outside any unit log
                    stages.check_before_compute(cfg, worker.run)
                worker.install_step_faults()
            except Exception as e:
                events.send("fatal", error=str(e) or type(e).__name__)
                return 2
            continue
        assert worker is not None, "init must come first"
        worker.handle(msg)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
