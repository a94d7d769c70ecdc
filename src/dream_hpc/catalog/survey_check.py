"""`catalog check`: counts, bad rows and sources on the survey footprint, refused when the footprint is empty."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dream_hpc.catalog.reader import CatalogError, RowReport, load_catalog
from dream_hpc.catalog.selection import select_for_unit
from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit


@dataclass
class CatalogCheck:
    report: RowReport
    n_in_footprint: int
    per_filter: dict[str, dict[str, int]]  # filter -> {"sources", "stars", "brighter_than_24"}

    def lines(self) -> list[str]:
        out = [self.report.line(), f"sources on the survey footprint (with margin): {self.n_in_footprint:,}"]
        for f, c in self.per_filter.items():
            out.append(f"  {f}: {c['sources']:,} sources ({c['stars']:,} stars), {c['bright']:,} brighter than AB 24")
        return out


def check_catalog(cfg: SurveyConfig, units: list[WorkUnit]) -> CatalogCheck:
    """Load the catalog and count what falls on the plan; raises CatalogError when nothing does."""
    cat = load_catalog(cfg, sorted({u.filter for u in units}))
    on = np.zeros(len(cat.sources), bool)
    per_filter: dict[str, np.ndarray] = {}
    seen: set[tuple] = set()
    for u in units:
        key = (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), u.pa_v3, u.filter)
        if key in seen:
            continue
        seen.add(key)
        sel = select_for_unit(cat, u, cfg.catalog.margin_arcsec)
        idx = np.searchsorted(cat.sources.row, sel.row)
        on[idx] = True
        per_filter.setdefault(u.filter, np.zeros(len(cat.sources), bool))[idx] = True
    if not on.any():
        s = cat.sources
        span = (f"catalog spans RA {s.ra.min():.4f}..{s.ra.max():.4f}, Dec {s.dec.min():.4f}..{s.dec.max():.4f}"
                if len(s) else "catalog has no usable rows")
        ras, decs = [u.ra for u in units], [u.dec for u in units]
        raise CatalogError(f"catalog {cat.path}: no sources in the survey footprint (pointings at RA "
                           f"{min(ras):.4f}..{max(ras):.4f}, Dec {min(decs):.4f}..{max(decs):.4f}; {span}); "
                           "check pointings.center_ra/center_dec or set catalog.recenter: true")
    counts = {}
    for f, mask in sorted(per_filter.items()):
        m = cat.sources.mags[f]
        counts[f] = {"sources": int(mask.sum()), "stars": int((mask & cat.sources.is_star).sum()),
                     "bright": int((mask & (m < 24)).sum())}
    return CatalogCheck(report=cat.report, n_in_footprint=int(on.sum()), per_filter=counts)
