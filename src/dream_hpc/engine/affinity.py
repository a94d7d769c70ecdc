"""The scheduler's queue: longest first, preferring the reference kind a rank already holds.

A rank's worker keeps the references of the units it just ran (stages/hot_references.py): the next
unit of the same kind (detector, subarray, readout, filter) reads none of them again. So when a rank
asks for work, it gets the longest queued unit of the kind it holds, provided that unit is nearly as
long as the longest queued task overall (`AFFINITY_SLACK`), in the same priority class (resumed
units and mosaics keep their precedence) and of the same filter (a filter's units still finish
together, so its Image3 starts as early as longest-path-first planned: measured, preferring across
filters made cosmos-web's 2-rank makespan 5% longer); otherwise plain longest-first. Units of one kind usually
have one planned cost, so the preference mostly chooses among equals and costs longest-first
balance (nearly) nothing: bench/scheduler_sim.py measures makespan and hit rate with and without it.

Both heaps use lazy deletion, so a request costs O(log n) even for 10^5 queued units.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from typing import Any

# A preferred-kind task may be up to this fraction shorter than the longest queued task.
AFFINITY_SLACK = 0.1


def reference_kind(task: Any) -> Hashable | None:
    """What decides a unit's references: the same kind means the same dark, flat, etc. (None: not a unit)."""
    u = getattr(task, "unit", None)
    if getattr(task, "kind", None) != "unit" or u is None:
        return None
    return (u.detector, u.subarray, u.readpatt, u.ngroups, u.nints, u.filter, u.pupil)


class TaskQueue:
    """Queued tasks by `sort_key()`, with one side heap per reference kind."""

    def __init__(self, tasks: Iterable[Any] = (), slack: float | None = None):
        self.slack = AFFINITY_SLACK if slack is None else slack
        self._all: list[tuple[Any, int, str, Any]] = []
        self._by_kind: dict[Hashable, list[tuple[Any, int, str, Any]]] = {}
        self._live: dict[str, int] = {}  # key -> sequence number of its queued entry
        self._seq = itertools.count()
        for t in tasks:
            self.push(t)

    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return bool(self._live)

    def push(self, task: Any) -> None:
        unit = getattr(task, "unit", None)
        entry = (task.sort_key(), next(self._seq), task.key, unit.filter if unit is not None else None)
        self._live[task.key] = entry[1]
        heapq.heappush(self._all, entry)
        kind = reference_kind(task)
        if kind is not None:
            heapq.heappush(self._by_kind.setdefault(kind, []), entry)

    def _top(self, heap: list[tuple[Any, int, str, Any]]) -> tuple[Any, int, str, Any] | None:
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)  # taken through the other heap, or removed
        return heap[0] if heap else None

    def _close_enough(self, cand: tuple[Any, int, str, Any], top: tuple[Any, int, str, Any]) -> bool:
        (c_prio, c_neg, *_), (t_prio, t_neg, *_) = cand[0], top[0]
        return c_prio == t_prio and cand[3] == top[3] and -c_neg >= (1.0 - self.slack) * -t_neg

    def pop(self, prefer: Hashable | None = None) -> str | None:
        """Key of the task to run next: the longest, or the longest of kind `prefer` if close enough."""
        top = self._top(self._all)
        if top is None:
            return None
        chosen = top
        if prefer is not None and prefer in self._by_kind:
            cand = self._top(self._by_kind[prefer])
            if cand is not None and self._close_enough(cand, top):
                chosen = cand
        del self._live[chosen[2]]
        return chosen[2]

    def remove(self, key: str) -> None:
        self._live.pop(key, None)
