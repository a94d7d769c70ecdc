"""Per exposure group: did tweakreg align it? From what tweakwcs logged, group by group.

tweakreg aligns the exposure groups to each other (one is the reference, each other one is matched
to it and fitted, or "Failed to align ... not enough matches" and left where its header put it),
then, with an `abs_refcat`, all groups together to that catalog. It never fails the step for a group
it could not fit, so one overall "COMPLETE" hides the groups left unaligned: this reads the log.
Status: "fitted" when every group is aligned (and the absolute fit, if asked for, succeeded),
"partial" naming the groups left out, "not fitted" when none was.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

_GROUP = r"'?GROUP ID: ([^' ]+)'?"
_REFERENCE = re.compile(r"Selected image " + _GROUP + " as reference image")
_ALIGNING = re.compile(r"Aligning image catalog " + _GROUP)
_MATCHES = re.compile(r"Found (\d+) matches for " + _GROUP)
_RMSE = re.compile(r"FIT RMSE:\s*([0-9.eE+-]+)")
_FINAL = re.compile(r"Final solution based on (\d+) objects")
_NOT_ENOUGH = re.compile(r"Not enough matches \((\d+)\) found for image catalog " + _GROUP + r"\. Min required: (\d+)")
_FAILED = re.compile(r"Failed to align catalog " + _GROUP)
_EMPTY = re.compile(r"Group with ID '([^']+)' will not be aligned: (.*)")
_ABSOLUTE = re.compile(r"Aligning to absolute reference catalog")


def _new(group: str) -> dict[str, Any]:
    return {"group": group, "relative": "not attempted", "matches": None, "rmse_arcsec": None, "reason": ""}


def parse(records: Sequence[logging.LogRecord], groups: Sequence[str], absolute_requested: bool,
          max_rmse_arcsec: float) -> dict[str, Any]:
    """Per-group and absolute outcome of one tweakreg run; `groups` are the expected exposure groups."""
    per = {g: _new(g) for g in groups}
    absolute: dict[str, Any] = {"requested": absolute_requested, "status": "not attempted", "matches": None,
                                "rmse_arcsec": None, "reason": ""}
    phase, current = "relative", None
    for rec in records:
        msg = rec.getMessage()
        if _ABSOLUTE.search(msg):
            phase, current = "absolute", None
            absolute["status"] = "failed"
            absolute["reason"] = "no fit logged"
            continue
        if phase == "absolute":
            if m := _MATCHES.search(msg):
                absolute["matches"] = int(m.group(1))
            elif m := _NOT_ENOUGH.search(msg):
                absolute.update(matches=int(m.group(1)), status="failed",
                                reason=f"not enough matches ({m.group(1)} < {m.group(3)})")
            elif m := _RMSE.search(msg):
                absolute["rmse_arcsec"] = float(m.group(1))
            elif _FINAL.search(msg):
                absolute.update(status="fitted", reason="")
            elif rec.levelno >= logging.WARNING and absolute["status"] != "fitted":
                absolute["reason"] = msg[:200]
            continue
        if m := _REFERENCE.search(msg):
            per.setdefault(m.group(1), _new(m.group(1))).update(relative="reference")
        elif m := _ALIGNING.search(msg):
            current = m.group(1)
            per.setdefault(current, _new(current)).update(relative="failed", reason="no fit logged")
        elif m := _MATCHES.search(msg):
            per.setdefault(m.group(2), _new(m.group(2)))["matches"] = int(m.group(1))
        elif m := _NOT_ENOUGH.search(msg):
            per.setdefault(m.group(2), _new(m.group(2))).update(
                matches=int(m.group(1)), relative="failed",
                reason=f"not enough matches ({m.group(1)} < {m.group(3)})")
        elif (m := _RMSE.search(msg)) and current:
            per[current]["rmse_arcsec"] = float(m.group(1))
        elif _FINAL.search(msg) and current:
            per[current].update(relative="fitted", reason="")
        elif m := _FAILED.search(msg):
            g = per.setdefault(m.group(1), _new(m.group(1)))
            g["relative"] = "failed"
            g["reason"] = g["reason"] if g["reason"] != "no fit logged" else "failed to align"
        elif m := _EMPTY.search(msg):
            per.setdefault(m.group(1), _new(m.group(1))).update(relative="failed", reason=m.group(2))
    if len(per) == 1:  # one group: nothing to align relatively
        for g in per.values():
            if g["relative"] == "not attempted":
                g["relative"] = "single group"
    for g in per.values():
        if g["relative"] == "fitted" and g["rmse_arcsec"] is not None and g["rmse_arcsec"] > max_rmse_arcsec:
            g.update(relative="failed", reason=f"fit RMSE {g['rmse_arcsec']:.3g}\": mismatched sources")
    if absolute["status"] == "fitted" and (absolute["rmse_arcsec"] or 0.0) > max_rmse_arcsec:
        absolute.update(status="failed", reason=f"fit RMSE {absolute['rmse_arcsec']:.3g}\": mismatched sources")
    rel_ok = {k: g["relative"] in ("fitted", "reference", "single group") for k, g in per.items()}
    abs_ok = (absolute["status"] == "fitted") if absolute_requested else True
    for k, g in per.items():
        g["aligned"] = bool(rel_ok[k] and abs_ok)
    unaligned = sorted(k for k, g in per.items() if not g["aligned"])
    if not unaligned:
        status = "fitted"
    elif len(unaligned) == len(per):
        status = "not fitted"
    else:
        status = "partial"
    return {"status": status, "groups": [per[k] for k in sorted(per)], "unaligned_groups": unaligned,
            "absolute": absolute}


def one_line(alignment: dict[str, Any]) -> str:
    """e.g. 'partial: 2/4 groups aligned (left: jw..._00003, jw..._00004); absolute fitted, 15 matches'."""
    groups = alignment.get("groups", [])
    n_ok = sum(g["aligned"] for g in groups)
    text = f"{alignment['status']}: {n_ok}/{len(groups)} groups aligned"
    if alignment.get("unaligned_groups"):
        text += f" (left: {', '.join(alignment['unaligned_groups'][:6])})"
    a = alignment.get("absolute", {})
    if a.get("requested"):
        text += f"; absolute {a['status']}"
        if a.get("matches") is not None:
            text += f", {a['matches']} matches"
        if a.get("rmse_arcsec") is not None:
            text += f", RMSE {a['rmse_arcsec'] * 1000:.1f} mas"
        if a.get("reason"):
            text += f" ({a['reason'][:80]})"
    return text
