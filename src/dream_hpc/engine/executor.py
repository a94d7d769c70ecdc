"""The rank side of a worker: start its subprocess, hand it one task, read its events, time it out.

The `Executor` is the only writer of a rank's journal records about units and mosaics; a worker that
dies, hangs or reports an error ends its task as failed/timeout with the stage and step named, and the
next task gets a fresh worker. One bad exposure never stops a survey.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.core.records import RESULT_FIELDS
from dream_hpc.engine.worker import REAL_STAGES


class FatalRunError(RuntimeError):
    """A problem no unit can get past (e.g. an invalid step parameter): the run stops with it."""


class WorkerProcess:
    """One worker subprocess as seen from its rank: send tasks, read events, kill."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None, stages: str = REAL_STAGES):
        self.config_path = config_path
        self.stages = stages
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dream_hpc.engine.worker", str(write_fd), str(config_path), stages],
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
                 notify: Callable[[str, dict[str, Any]], None] | None = None, worker: WorkerProcess | None = None,
                 stages: str = REAL_STAGES):
        self.cfg, self.run, self.journal, self.rank = cfg, run, journal, rank
        self.stages = stages  # the stage set every (re)started worker runs
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
        self.worker_tasks = 0  # tasks the current worker process has been given
        self._last_worker: WorkerProcess | None = None

    # -- lifecycle --
    def _ensure_worker(self) -> WorkerProcess:
        if self.worker is None or self.worker.proc.poll() is not None:
            if self.worker is not None:
                self.worker.close()
            self.worker = WorkerProcess(self.cfg.source, stages=self.stages)
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
        log = self.run.logs / (f"{task.key}.log" if task.kind == "unit"
                               else f"mosaic_{task.filter.replace('/', '_')}.log")
        self.deadline = now + task.limit_s
        if task.spec.get("fresh_worker") and self.worker is not None and self.worker_tasks:
            # A tile task's memory must not depend on what this rank ran before (the long-lived
            # worker's heap grows by a few MB per task): it gets a worker of its own.
            self.worker.stop()
            self.worker = None
        worker = self._ensure_worker()
        self.worker_tasks = 0 if worker is not self._last_worker else self.worker_tasks
        self._last_worker = worker
        self.worker_tasks += 1
        if task.kind == "unit":
            self.journal.write("unit_start", task.key, stage=todo[0], stages=list(todo), limit_s=task.limit_s,
                               log=self.run.rel(log), worker_pid=worker.pid)
            worker.send({"op": "unit", "key": task.key, "unit": task.unit.to_dict(), "stages": list(todo),
                         "log": str(log)})
        else:
            self.journal.write("mosaic_start", None, filter=task.filter, units=[u.unit_id for u in task.units],
                               limit_s=task.limit_s, log=self.run.rel(log), worker_pid=worker.pid)
            worker.send({"op": "mosaic", "key": task.key, "filter": task.filter,
                         "units": [u.to_dict() for u in task.units], "log": str(log),
                         **({"spec": task.spec} if task.spec else {})})
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
        # the fields of a StageResult, defined once (core/records.py); seeds belong to units only
        common = {k: r.get(k, {}) for k in RESULT_FIELDS if k != "seeds"}
        common |= dict(wall_s=ev["wall_s"], cpu_s=ev["cpu_s"], peak_rss_mb=ev["peak_rss_mb"], start=_iso(ev["start"]))
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
