"""Per exposure group: was it aligned? For a tiled mosaic, from the survey-wide astrometry tasks.

A tiled mosaic runs no Image3 tweakreg whose log `alignment_status.parse` could read: each visit's
astrometry task (stages/tiles.run_astrometry) aligns its exposures to each other and to the local
reference catalog and journals, per exposure, tweakreg's status, the relative and absolute fits
(matches, RMS) and the frozen WCS's shift/rotation. This turns those records into the same shape
`alignment_status.parse` gives (groups = exposures, as tweakreg groups the detectors of one exposure),
so the science check, the summary and the report say "fitted" only when every group was.
A visit whose astrometry task failed leaves all its exposures unaligned, with the task's error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan.grid import task_label, visit_id
from dream_hpc.stages.pointing_error import exposure_key


def _group(name: str) -> dict[str, Any]:
    return {"group": name, "relative": "not attempted", "matches": None, "rmse_arcsec": None, "reason": "",
            "aligned": False}


def _fit_ok(fit: Mapping[str, Any], min_matches: int, max_rmse_arcsec: float) -> str:
    """'' when an absolute fit is usable, else why not."""
    if "SUCCESS" not in str(fit.get("status", "")):
        return f"absolute fit {fit.get('status', 'not fitted')}"
    n = fit.get("n_matches") or 0
    if n < min_matches:
        return f"absolute fit on {n} stars < mosaic.min_matches={min_matches}"
    rmse = fit.get("rmse_arcsec")
    if rmse is not None and rmse > max_rmse_arcsec:
        return f"fit RMSE {rmse:.3g}\": mismatched sources"
    return ""


def from_tasks(tasks: Mapping[str, Any], filt: str, units: Sequence[WorkUnit], min_matches: int,
               max_rmse_arcsec: float) -> dict[str, Any]:
    """`tasks`: RunView.mosaic_tasks (label -> MosaicState); `units`: the filter's planned units."""
    units = [u for u in units if u.filter.upper() == filt.upper()]
    groups: dict[str, dict[str, Any]] = {exposure_key(u): _group(exposure_key(u)) for u in units}
    by_visit: dict[str, list[WorkUnit]] = {}
    for u in units:
        by_visit.setdefault(visit_id(u), []).append(u)
    n_fits, worst_rmse = 0, None
    for visit, members in sorted(by_visit.items()):
        state = tasks.get(task_label(filt.upper(), "astrometry", visit))
        frozen = ((state.data or {}).get("extra", {}).get("frozen_wcs", {})
                  if state is not None and state.status == "done" else {})
        for u in members:
            g = groups[exposure_key(u)]
            f = frozen.get(u.unit_id)
            if f is None:
                if g["reason"]:
                    continue
                g["relative"] = "failed" if state is not None else "not attempted"
                g["reason"] = ((state.error or f"astrometry task {state.status}") if state is not None
                               else f"no astrometry task for visit {visit}")[:200]
                continue
            a = f.get("absolute", {})
            why = "" if f.get("status") == "COMPLETE" else f"tweakreg {f.get('status')}"
            why = why or _fit_ok(a, min_matches, max_rmse_arcsec)
            n_fits += 1
            if a.get("rmse_arcsec") is not None:
                worst_rmse = max(worst_rmse or 0.0, float(a["rmse_arcsec"]))
            # the group is aligned only if every detector of the exposure is
            first = g["matches"] is None and not g["reason"]
            g["matches"] = a.get("n_matches") if first else min(g["matches"] or 0, a.get("n_matches") or 0)
            g["rmse_arcsec"] = max(g["rmse_arcsec"] or 0.0, a.get("rmse_arcsec") or 0.0)
            if why:
                g.update(relative="failed", reason=why, aligned=False)
            elif first or g["aligned"]:
                g.update(relative="fitted", aligned=True)
    unaligned = sorted(k for k, g in groups.items() if not g["aligned"])
    status = "fitted" if not unaligned else ("not fitted" if len(unaligned) == len(groups) else "partial")
    absolute = {"requested": True, "status": "fitted" if n_fits and not unaligned else "failed" if n_fits else "not attempted",
                "matches": min((g["matches"] for g in groups.values() if g["matches"] is not None), default=None),
                "rmse_arcsec": worst_rmse,
                "reason": "" if not unaligned else f"{len(unaligned)} exposure group(s) not aligned",
                "per_visit": True}
    return {"status": status, "groups": [groups[k] for k in sorted(groups)], "unaligned_groups": unaligned,
            "absolute": absolute, "source": "tiled astrometry tasks (one per visit)"}
