"""`catalog check`: what the files hold, bad rows, and the sources on the survey footprint.

The check goes through the prepared catalog (catalog/prepared.py): the catalog is streamed once
into its spatially sorted file (reused while the source files and settings are unchanged), and
each distinct detector footprint reads only the rows near it. Refused when the footprint is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dream_hpc.catalog import prepared
from dream_hpc.catalog.reader import CatalogError, RowReport
from dream_hpc.catalog.selection import select_for_unit
from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit


# --- checking a catalog against the plan -----------------------------------------------------
@dataclass
class CatalogCheck:
    report: RowReport
    n_in_footprint: int
    per_filter: dict[str, dict[str, int]]  # filter -> {"sources", "stars", "bright"}
    survey_filters: list[str]
    area_deg2: float = 0.0
    prepared: Path | None = None

    def lines(self) -> list[str]:
        r = self.report
        out = [r.line()]
        if r.columns:
            out.append("columns: " + ", ".join(f"{k} = {v}" for k, v in r.columns.items()))
        if r.filters_available:
            missing = sorted(set(self.survey_filters) - set(r.filters_available))
            out.append(f"filters in the catalog: {', '.join(r.filters_available)}; the survey's: "
                       f"{', '.join(self.survey_filters)}" + (f" (missing: {', '.join(missing)})" if missing else " (all present)"))
        if self.area_deg2:
            out.append(f"sky area of the usable rows: {self.area_deg2:.4g} deg^2 ({self.area_deg2 * 3600:.4g} arcmin^2)")
        out.append(f"sources on the survey footprint (with margin): {self.n_in_footprint:,}")
        for f, c in self.per_filter.items():
            out.append(f"  {f}: {c['sources']:,} sources ({c['stars']:,} stars), {c['bright']:,} brighter than AB 24")
        if self.prepared:
            out.append(f"prepared catalog: {self.prepared}")
        return out


def check_catalog(cfg: SurveyConfig, units: list[WorkUnit], prepared_path: Path | None = None) -> CatalogCheck:
    """Prepare (or reuse) the survey's catalog and count what falls on the plan; raises CatalogError
    (one line) when the files are unusable or nothing is on the footprint."""
    result = prepared.prepare(cfg, units, prepared_path)
    cat = prepared.open_prepared(result.path)
    n_src = max(cat.report.n_rows, 1)
    on = np.zeros(n_src, bool)  # indexed by the source file's row
    per_filter: dict[str, np.ndarray] = {}
    stars = np.zeros(n_src, bool)
    bright: dict[str, np.ndarray] = {}
    by_footprint: dict[tuple, list[WorkUnit]] = {}
    for u in units:
        key = (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), round(u.pa_v3, 9))
        by_footprint.setdefault(key, []).append(u)
    for group in by_footprint.values():
        sel = select_for_unit(cat, group[0], cfg.catalog.margin_arcsec)  # the outline ignores the filter
        on[sel.row] = True
        stars[sel.row[sel.is_star]] = True
        for f in {u.filter for u in group}:
            per_filter.setdefault(f, np.zeros(n_src, bool))[sel.row] = True
            bright.setdefault(f, np.zeros(n_src, bool))[sel.row[sel.mags[f] < 24]] = True
    if not on.any():
        span = (f"catalog spans RA {cat.span[0]:.4f}..{cat.span[1]:.4f}, Dec {cat.span[2]:.4f}..{cat.span[3]:.4f}"
                if cat.span else "catalog has no usable rows")
        ras, decs = [u.ra for u in units], [u.dec for u in units]
        hint = ("check pointings.center_ra/center_dec or catalog.recenter_from" if cfg.catalog.recenter
                else "check pointings.center_ra/center_dec or set catalog.recenter: true")
        raise CatalogError(f"catalog {cfg.resolve(cfg.catalog.path)}: no sources in the survey footprint (pointings "
                           f"at RA {min(ras):.4f}..{max(ras):.4f}, Dec {min(decs):.4f}..{max(decs):.4f}; {span}); {hint}")
    counts = {f: {"sources": int(mask.sum()), "stars": int((mask & stars).sum()), "bright": int(bright[f].sum())}
              for f, mask in sorted(per_filter.items())}
    return CatalogCheck(report=cat.report, n_in_footprint=int(on.sum()), per_filter=counts,
                        survey_filters=sorted({u.filter.upper() for u in units}), area_deg2=cat.area_deg2,
                        prepared=result.path)
