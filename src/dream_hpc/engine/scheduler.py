"""Which task runs next: longest-first dynamic scheduling, one mosaic per filter released when its units end.

No MPI and no processes here: the same `Scheduler` is driven by the coordinator in a run and by `replay`
on a simulated clock (task order before a run; bench/scheduler_sim.py at cluster scale).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from dream_hpc.core.workunit import WorkUnit
from dream_hpc.engine.affinity import TaskQueue, reference_kind
from dream_hpc.engine.tasks import Task, image3_seconds

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
        self._queue = TaskQueue(tasks)  # longest first; a rank's held reference kind preferred (affinity.py)
        self.running: dict[str, Task] = {}
        self.outcomes: dict[str, Any] = {}
        self.mosaic_factory = mosaic_factory
        self.allow_partial = allow_partial
        self.blocked: dict[str, str] = {}  # filter (or tiled task label) -> why it did not run
        self.waiting: dict[str, Task] = {}  # tasks whose `after` have not all ended
        self._blocked_keys: set[str] = set()
        self._left: dict[str, int] = {}
        for t in tasks:
            if t.kind == "unit" and t.unit is not None:
                self._left[t.unit.filter] = self._left.get(t.unit.filter, 0) + 1

    def push(self, task: Task) -> None:
        self.tasks[task.key] = task
        if task.after:
            self.waiting[task.key] = task
            self._release()
            return
        self._queue.push(task)

    def _release(self) -> None:
        """Queue waiting tasks whose dependencies all ended; block (and name) those with a failed one."""
        changed = True
        while changed:
            changed = False
            for key, task in list(self.waiting.items()):
                if any(k not in self.outcomes and k not in self._blocked_keys for k in task.after):
                    continue
                del self.waiting[key]
                changed = True
                failed = [k for k in task.after if k in self._blocked_keys or self.outcomes[k].status not in
                          ("done", "skipped")]
                release = getattr(self.mosaic_factory, "release", None)
                why = release(task, self.outcomes, failed) if release else (
                    f"{task.key} not run: {', '.join(failed)} did not finish" if failed else None)
                if why:
                    self.blocked[task.filter or key] = why
                    self._blocked_keys.add(key)
                else:
                    self._queue.push(task)

    def next(self, prefer: Any = None) -> Task | None:
        """The next task; `prefer`: the reference kind the asking rank holds (affinity.reference_kind)."""
        key = self._queue.pop(prefer)
        if key is None:
            return None
        task = self.tasks[key]
        self.running[key] = task
        return task

    def hold(self, outcome: Any) -> Task | None:
        """End a task without handing it out (a unit whose references are bad): recorded as its
        outcome, so its filter's mosaic is blocked or released as for any failed unit."""
        self._queue.remove(outcome.key)
        self.running[outcome.key] = self.tasks[outcome.key]
        return self.complete(outcome)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self.waiting)

    @property
    def finished(self) -> bool:
        return not self._queue and not self.running

    def complete(self, outcome: Any) -> Task | None:
        """Record an outcome; returns the mosaic task it released, if any."""
        task = self.running.pop(outcome.key)
        self.outcomes[outcome.key] = outcome
        if self.waiting:
            self._release()
        if task.kind != "unit" or task.unit is None or self.mosaic_factory is None:
            return None
        filt = task.unit.filter
        self._left[filt] -= 1
        if self._left[filt]:
            return None
        mine = [t for t in self.tasks.values() if t.kind == "unit" and t.unit is not None and t.unit.filter == filt]
        if getattr(self.mosaic_factory, "tiled", False):  # the filter's task graph; it blocks per tile
            graph, blocked = self.mosaic_factory.graph(filt, mine, self.outcomes)
            self.blocked.update(blocked)
            for t in graph:
                self.push(t)
            return graph[0] if graph else None
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
           latency_s: float = 0.005, affinity: bool = True, hit_factor: float = 1.0) -> dict[str, float]:
    """The Scheduler on a simulated clock (no compute): makespan and its lower bounds, in seconds.

    Units take `durations[key]` (default: their planned cost), mosaics `mosaic_seconds(units)`.
    Used to choose the task order before a run and by bench/scheduler_sim.py at cluster scale.
    With `affinity`, a worker asks for the reference kind it last ran, as ranks do; a unit given to a
    worker holding its kind (a hit) takes `hit_factor` x its duration (references kept hot).
    """
    from dream_hpc.engine.executor import Outcome

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
    held: dict[int, Any] = {}
    hits = given = 0
    while not sched.finished:
        while idle and (task := sched.next(held.get(idle[-1]) if affinity else None)):
            worker = idle.pop()
            dur = durations.get(task.key, mosaic_cost.get(task.key, task.cost))
            kind = reference_kind(task)
            if kind is not None:
                given += 1
                if held.get(worker) == kind:
                    hits += 1
                    dur *= hit_factor
                held[worker] = kind
            heapq.heappush(running, (now + latency_s + dur, worker, task.key))
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
            "work": work, "mosaic_work": sum(mosaic_cost.values()), "kind_hits": hits,
            "kind_hit_rate": hits / max(given, 1)}


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
