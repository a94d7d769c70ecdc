"""The live progress line of a running survey: units done/failed per stage, mosaics, elapsed and ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from dream_hpc.core.runstate import STAGES, fmt_duration


class Progress:
    """Units done / failed / running per stage with an ETA, redrawn on a TTY, plain lines otherwise."""

    def __init__(self, costs: dict[str, float], stream: TextIO | None = None, interval_s: float = 30.0,
                 n_mosaics: int = 0):
        self.costs = costs
        self.stream = stream = stream or sys.stderr
        self.tty = stream.isatty()
        self.interval = 1.0 if self.tty else interval_s
        self.t0 = time.time()
        self.last = 0.0
        self.stage_of: dict[str, str] = {}  # running key -> stage
        self.done = {s: 0 for s in STAGES}
        self.failed = {s: 0 for s in STAGES}
        self.n_done = self.n_failed = self.n_skipped = self.n_missing = 0
        self.cost_finished = self.cost_computed = 0.0
        self.n_mosaics, self.mosaics_done = n_mosaics, 0
        self.tile_tasks_done: dict[str, int] = {}  # tiled mosaics: phase (astrometry, outliers, tile) -> done

    def on_start(self, key: str, stage: str, verified: tuple[str, ...] = ()) -> None:
        """A task began at `stage`; `verified` stages were already done in an earlier attempt."""
        self.stage_of[key] = stage
        for s in verified:
            self.done[s] += 1

    def on_stage(self, key: str, stage: str) -> None:
        if key in self.stage_of:
            self.stage_of[key] = stage

    def on_stage_done(self, key: str, stage: str) -> None:
        if stage in self.done:
            self.done[stage] += 1

    def on_outcome(self, oc: Any) -> None:
        self.stage_of.pop(oc.key, None)
        ok = oc.status in ("done", "skipped")
        if oc.kind == "mosaic":
            self.mosaics_done += ok and "/" not in oc.key  # a tiled mosaic's tasks: only its merge counts
            if ok and "/" in oc.key:
                phase = oc.key.split("/")[1]
                self.tile_tasks_done[phase] = self.tile_tasks_done.get(phase, 0) + 1
            if not ok:
                self._line(f"mosaic {oc.key} {oc.status} in {oc.step or '-'}: {oc.error}")
            return
        self.cost_finished += self.costs.get(oc.key, 0.0)
        if oc.status == "missing":  # `dream-hpc mosaic`: an unfinished unit, left out (not computed)
            self.n_missing += 1
        elif oc.status == "skipped":
            self.n_done += 1
            self.n_skipped += 1
            for s in STAGES:
                self.done[s] += 1
        elif ok:
            self.n_done += 1
            self.cost_computed += self.costs.get(oc.key, 0.0)
        else:
            self.n_failed += 1
            if oc.stage in self.failed:
                self.failed[oc.stage] += 1
            what = "timed out" if oc.status == "timeout" else "failed"
            self._line(f"unit {oc.key} {what} in {oc.stage}/{oc.step or '-'}: {oc.error}")
        self.tick(force=not self.tty and not ok and oc.status != "missing")

    def eta(self) -> float | None:
        """Planned cost left divided by the planned cost computed per second so far."""
        if self.cost_computed <= 0:
            return None
        rate = self.cost_computed / max(time.time() - self.t0, 1e-6)
        return max(sum(self.costs.values()) - self.cost_finished, 0.0) / rate

    def text(self) -> str:
        total = len(self.costs)
        running: dict[str, int] = {}
        for stage in self.stage_of.values():
            running[stage] = running.get(stage, 0) + 1
        stages = " | ".join(f"{s} {self.done[s]}" + (f" +{running[s]} run" if running.get(s) else "")
                            + (f" {self.failed[s]} failed" if self.failed[s] else "") for s in STAGES)
        mos = f" | mosaic {self.mosaics_done}/{self.n_mosaics}" + (
            f" +{running['mosaic']} run" if running.get("mosaic") else "") if self.n_mosaics else ""
        if self.tile_tasks_done:
            mos += " (" + ", ".join(f"{p} {n}" for p, n in self.tile_tasks_done.items()) + " done)"
        eta = self.eta()
        eta_s = f" | ETA {fmt_duration(eta)}" if eta is not None else ""
        skipped = f" ({self.n_skipped} already done)" if self.n_skipped else ""
        skipped += f", {self.n_missing} not finished" if self.n_missing else ""
        return (f"[{fmt_duration(time.time() - self.t0)}] units {self.n_done}/{total} done{skipped}, "
                f"{self.n_failed} failed | {stages}{mos}{eta_s}")

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.text())
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def line(self, msg: str) -> None:
        self._line(msg)

    def _line(self, msg: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
