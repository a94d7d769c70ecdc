"""The tiled mosaic of one filter as engine tasks with dependencies (stages/tiles.py computes them).

When all units of a filter have ended, the scheduler asks `TiledMosaics` for the filter's tasks:

    units -> astrometry per visit -> outliers per visit (padded with overlapping exposures of other
    visits, so it also waits for their astrometry) -> one task per tile (waits for the outlier
    tasks of every exposure it holds) -> merge (the filter's catalog, tile index, preview)

Each task is an ordinary "mosaic" task for the executor (time limit, journal, resume by checksum):
its journal label is `<FILTER>/<phase>/<id>`, the merge's is the filter itself, so the filter's
product reads back like a single Image3's. A task whose inputs failed is blocked and named; a tile
whose exposures failed blocks only that tile, and the merge goes ahead with the tiles that were
made (their absence is named in the tile index and the run ends failed) unless
`engine.allow_partial_mosaic` lets the tile use what finished.
"""

from __future__ import annotations

from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.engine.tasks import Task
from dream_hpc.plan.grid import task_label, visit_id

MERGE_COST_S = 2.0  # per tile: read its catalog, copy its core into the preview
OK = ("done", "skipped")


def _key(lbl: str) -> str:
    return f"mosaic_{lbl}"


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def critical_path_tails(tasks: list[Task]) -> None:
    """Set each task's `tail` to the longest chain of work that waits for it (its dependants' cost and
    tails): the scheduler then starts the tasks on the critical path first (longest path first), so
    the few long tiles and the merge do not wait for an idle rank at the end."""
    by_key = {t.key: t for t in tasks}
    dependants: dict[str, list[Task]] = {}
    for t in tasks:
        for d in t.after:
            dependants.setdefault(d, []).append(t)
    done: dict[str, float] = {}

    def tail(key: str) -> float:
        if key not in done:
            done[key] = max((c.cost + tail(c.key) for c in dependants.get(key, [])), default=0.0)
        return done[key]

    for key, t in by_key.items():
        t.tail = tail(key)


class TiledMosaics:
    """Scheduler hook: builds a filter's task graph, and fills each task's inputs when it is released."""

    tiled = True

    def __init__(self, cfg: SurveyConfig, view: Any, units: list[WorkUnit]):
        from dream_hpc.plan import grid

        self.cfg, self.view = cfg, view
        self.grids = grid.filter_tiles(cfg, units)
        self.by_id = {u.unit_id: u for u in units}
        self._unit_boxes: dict[str, tuple[float, float, float, float]] = {}
        for filt, g in self.grids.items():
            for u in units:
                if u.filter == filt:
                    x, y = g.sky_to_pixel(*grid.unit_corners(u))
                    self._unit_boxes[u.unit_id] = (float(x.min()), float(x.max()), float(y.min()), float(y.max()))

    # -- costs (plan/cost.py) --
    def _cost(self, phase: str, units: list[WorkUnit], tile: Any = None) -> float:
        from dream_hpc.plan import cost, grid

        try:
            pix = sum(cost.unit_pixels(u) for u in units)
            if phase == "tile":
                return grid.tile_cost(tile, {u.unit_id: cost.unit_pixels(u) for u in units}).cpu_s
            groups = cost.exposure_groups(units)
            c = cost.image3_cost(len(units), pix, 0.0, groups).cpu_s
            return c * (0.5 if phase == "astrometry" else 0.6)  # tweakreg vs skymatch+outliers shares
        except Exception:
            return 10.0 * max(len(units), 1)

    def _task(self, lbl: str, phase: str, units: list[WorkUnit], spec: dict[str, Any], after: list[str],
              cost_s: float, filt: str) -> Task:
        eng = self.cfg.engine
        state = (self.view.mosaic_tasks if "/" in lbl else self.view.mosaics).get(lbl) if self.view else None
        recorded = {"done": state.data} if state is not None and state.data else {}
        return Task(_key(lbl), "mosaic", cost_s, max(eng.min_timeout_s, cost_s * eng.timeout_factor), filter=lbl,
                    units=sorted(units, key=lambda u: u.unit_id), recorded=recorded,
                    spec={"phase": phase, "filter": filt, **spec}, after=after)

    # -- the graph --
    def graph(self, filt: str, mine: list[Task], outcomes: dict[str, Any]) -> tuple[list[Task], dict[str, str]]:
        """(tasks, blocked label -> why) for one filter whose units all ended."""
        g = self.grids[filt]
        ok = {t.unit.unit_id: t for t in mine if outcomes[t.key].status in OK}
        bad = sorted(t.unit.unit_id for t in mine if outcomes[t.key].status not in OK)
        blocked: dict[str, str] = {}
        if not ok:
            return [], {filt: f"mosaic {filt} not run: none of its {len(mine)} units succeeded"}
        units = [self.by_id[uid] for uid in sorted(ok)]
        visits: dict[str, list[WorkUnit]] = {}
        for u in units:
            visits.setdefault(visit_id(u), []).append(u)
        tasks: list[Task] = []
        astro = {}
        for v, us in sorted(visits.items()):
            lbl = task_label(filt, "astrometry", v)
            astro[v] = _key(lbl)
            tasks.append(self._task(lbl, "astrometry", us, {"group": v}, [ok[u.unit_id].key for u in us],
                                    self._cost("astrometry", us), filt))
        outl = {}
        for v, us in sorted(visits.items()):
            box = (min(self._unit_boxes[u.unit_id][0] for u in us), max(self._unit_boxes[u.unit_id][1] for u in us),
                   min(self._unit_boxes[u.unit_id][2] for u in us), max(self._unit_boxes[u.unit_id][3] for u in us))
            pads = [u for u in units if visit_id(u) != v and _overlaps(box, self._unit_boxes[u.unit_id])]
            group = us + pads
            lbl = task_label(filt, "outliers", v)
            outl[v] = _key(lbl)
            tasks.append(self._task(lbl, "outliers", group, {"group": v, "own": [u.unit_id for u in us]},
                                    sorted({astro[visit_id(u)] for u in group}), self._cost("outliers", group), filt))
        tile_keys = []
        planned = [t.tile_id for t in g.tiles if t.units]
        for tile in g.tiles:
            if not tile.units:
                continue
            lost = [uid for uid in tile.units if uid in bad]
            lbl = task_label(filt, "tile", tile.tile_id)
            if lost and not self.cfg.engine.allow_partial_mosaic:
                blocked[lbl] = (f"tile {filt} {tile.tile_id} not run: {len(lost)} of its {len(tile.units)} exposures "
                                f"did not finish ({', '.join(lost[:6])}{' ...' if len(lost) > 6 else ''}); rerun to "
                                "retry them, or set engine.allow_partial_mosaic: true")
                continue
            us = [self.by_id[uid] for uid in tile.units if uid in ok]
            if not us:
                continue
            key = _key(lbl)
            tile_keys.append(key)
            tasks.append(self._task(lbl, "tile", us, {"grid": g.to_dict(), "tile": tile.tile_id, "fresh_worker": True},
                                    sorted({outl[visit_id(u)] for u in us}), self._cost("tile", us, tile), filt))
        if tile_keys:
            tasks.append(self._task(filt, "merge", units, {"grid": g.to_dict(), "planned": planned}, tile_keys,
                                    MERGE_COST_S * len(tile_keys), filt))
        else:
            blocked[filt] = (f"mosaic {filt} not run: none of its {len(planned)} tiles could run (exposures that did "
                             f"not finish: {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}); rerun to retry "
                             "them, or set engine.allow_partial_mosaic: true")
        critical_path_tails(tasks)
        return tasks, blocked

    # -- release: a task's inputs are its dependencies' products --
    def release(self, task: Task, outcomes: dict[str, Any], failed: list[str]) -> str | None:
        """Fill `task.expected_inputs` (and the merge's tile list) from what its dependencies made;
        a message when it cannot run."""
        spec = task.spec
        names = {d: d.removeprefix("mosaic_") for d in task.after}
        if spec["phase"] == "merge":
            made = {}
            for dep in task.after:
                oc = outcomes.get(dep)
                if oc is None or oc.status not in OK:
                    continue
                tid = dep.rsplit("/", 1)[-1]
                outs = oc.outputs
                pick = {s: next((p for p in outs if p.endswith(s)), None) for s in ("_i2d.fits", "_segm.fits", "_cat.ecsv")}
                made[tid] = {"i2d": pick["_i2d.fits"], "segm": pick["_segm.fits"], "cat": pick["_cat.ecsv"],
                             "inputs": [u.unit_id for u in self._tile_units(task, tid)]}
            if not made:
                return f"mosaic {spec['filter']} not run: none of its tiles was made ({', '.join(names[d] for d in failed)})"
            spec["tiles"] = made
            task.expected_inputs = {p: h for d in task.after if d in outcomes and outcomes[d].status in OK
                                    for p, h in outcomes[d].outputs.items()
                                    if p.endswith(("_i2d.fits", "_cat.ecsv"))}
            return None
        if failed:
            what = {"astrometry": "its exposures", "outliers": "the frozen WCS of", "tile": "the outlier masks of"}
            return (f"{task.filter} not run: {what.get(spec['phase'], '')} {', '.join(names.get(d, d) for d in failed[:4])}"
                    " did not finish")
        suffix = {"astrometry": "_cal.fits", "outliers": "_tweakreg.fits", "tile": "_crf.fits"}[spec["phase"]]
        wanted = {u.unit_id for u in task.units}
        task.expected_inputs = {p: h for d in task.after for p, h in outcomes[d].outputs.items()
                                if p.endswith(suffix) and p.rsplit("/", 1)[-1].removesuffix(suffix) in wanted}
        return None

    def _tile_units(self, task: Task, tile_id: str) -> list[WorkUnit]:
        tile = next(t for t in self.grids[task.spec["filter"]].tiles if t.tile_id == tile_id)
        return [self.by_id[uid] for uid in tile.units if uid in self.by_id]
