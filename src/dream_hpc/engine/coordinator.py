"""Rank 0's loop (hand out tasks on request, feed its own executor, honour RUN/STOP) and the other ranks' loop."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dream_hpc.engine.affinity import reference_kind
from dream_hpc.engine.scheduler import Scheduler
from dream_hpc.engine.tasks import Task


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
        self.held: dict[int, Any] = {}  # rank -> reference kind of the last unit it ran (kept hot there)

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

    def _next(self, rank: int = 0) -> Task | None:
        if self.stop_requested or self.fatal:
            return None
        task = self.sched.next(self.held.get(rank))
        if task is not None and reference_kind(task) is not None:
            self.held[rank] = reference_kind(task)
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
        from dream_hpc.engine.executor import FatalRunError

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
            while self.executor is not None and not self.executor.busy and (task := self._next(0)):
                oc = self._local(lambda t=task: self.executor.start(t))
                if oc is not None:
                    self._complete(oc)
            while self.idle and (task := self._next(self.idle[0])):
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
    from dream_hpc.engine.executor import FatalRunError

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
