"""The end-of-run science check of a tiled mosaic judged tile by tile (stages/tile_science.py): what the
run knows about its tiles (the tile index, why a planned tile was not made) handed to the check."""

from __future__ import annotations

import json
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.runstate import RunView

SKY_NOT_JUDGED = ("needs the assembled mosaic's background (stages/sky_check.py); this grid is larger than "
                  "tile_merge.ASSEMBLE_MAX_PIXELS, so only its tiles exist")


def per_tile(extra: dict[str, Any], forced: bool) -> bool:
    """Judge a filter's mosaic per tile: a tiled mosaic whose cores were not assembled, or when asked."""
    return extra.get("phase") == "merge" and bool(forced or not extra.get("i2d"))


def not_made(view: RunView, filt: str, index: dict[str, Any]) -> dict[str, str]:
    """Tile id -> why a planned tile has no products (its task's error, or that it never ran)."""
    from dream_hpc.plan.grid import task_label

    out = {}
    for tid in index.get("missing_tiles", []):
        task = view.mosaic_tasks.get(task_label(filt, "tile", tid))
        if task is None:
            out[tid] = "tile task never ran"
        else:
            out[tid] = f"tile task {task.status}: {task.error or '-'}"[:300]
    return out


def check(cfg: SurveyConfig, run: RunDir, view: RunView, filt: str, extra: dict[str, Any]) -> dict[str, Any]:
    from dream_hpc.stages import tile_science

    index = json.loads((run.root / extra["tile_index"]).read_text())
    i2d = run.root / extra["i2d"] if extra.get("i2d") else None
    result = tile_science.check_tiled(cfg, filt, run.root, index, int(extra.get("n_sources") or 0),
                                      not_made(view, filt, index), i2d)
    if i2d is None:
        result["tiles"]["checks_not_made"] = {"sky_matching": SKY_NOT_JUDGED}
    return result


def line(science: dict[str, Any]) -> list[str]:
    """The printed summary's line about a per-tile check: how many tiles were judged, which not and why."""
    t = science.get("tiles")
    if not t:
        return []
    out = [f"      judged per tile: {len(t['judged'])}/{t['n_planned']} tiles"
           + ("; NOT judged: " + "; ".join(f"{k} ({v[:80]})" for k, v in sorted(t["not_judged"].items()))
              if t["not_judged"] else "")]
    if t.get("overlap_warning"):
        out.append(f"      {t['overlap_warning']}")
    for name, why in (t.get("checks_not_made") or {}).items():
        out.append(f"      {name} not checked: {why}")
    return out
