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
from dream_hpc.catalog.selection import GALAXY_EXTENT, on_outline
from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint


def _key(u: WorkUnit) -> tuple:
    return (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), round(u.pa_v3, 9))


def _tel(att: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(v2, v3) arcsec of sky unit vectors (N, 3) under `att`: pysiaf's getv2v3 without its per-call trig."""
    uv = vec @ att  # = (att^T . v) for every row
    norm = np.sqrt((uv**2).sum(axis=1))
    return 3600.0 * np.degrees(np.arctan2(uv[:, 1], uv[:, 0])), 3600.0 * np.degrees(np.arcsin(uv[:, 2] / norm))


def _by_visit(units: list[WorkUnit]) -> list[list[WorkUnit]]:
    """Distinct footprints grouped by visit (its dithers and detectors lie close together)."""
    groups: dict[tuple, list[WorkUnit]] = {}
    seen: set[tuple] = set()
    for u in units:
        if _key(u) in seen:
            continue
        seen.add(_key(u))
        groups.setdefault((u.program, u.observation, u.visit), []).append(u)
    return list(groups.values())


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
    units_by_key: dict[tuple, set[str]] = {}
    for u in units:
        units_by_key.setdefault(_key(u), set()).add(u.filter)
    big = min(cat.max_galaxy_radius, prepared.LARGE_RADIUS_ARCSEC)
    extra = cfg.catalog.margin_arcsec + GALAXY_EXTENT * big + 1.0
    for group in _by_visit(units):
        # the exposures of one visit (dithers, filter pairs) overlap almost entirely: read the cells near
        # its detectors once and make their unit vectors once; each detector then gets the exact test of
        # selection.select_for_unit (its own attitude, the same outline predicate) on its search disc
        near = cat.near_all([(u.ra, u.dec, prepared.unit_reach(u) + extra) for u in group]).sources
        if not len(near):
            continue
        vec = footprint.unit_vectors(near.ra, near.dec)
        for u in group:
            ap = footprint.aperture_name(u.detector, u.subarray)
            centre = footprint.unit_vectors([u.ra], [u.dec])[0]
            # the disc of select_for_unit: the large galaxies (always read) reach by their own size
            reach = prepared.unit_reach(u) + cfg.catalog.margin_arcsec + GALAXY_EXTENT * cat.max_galaxy_radius + 1.0
            cand = np.flatnonzero(vec @ centre >= np.cos(np.deg2rad(reach / 3600.0)))
            v2, v3 = _tel(footprint.unit_attitude(u.ra, u.dec, u.pa_v3, ap), vec[cand])
            hit = cand[on_outline(ap, v2, v3, near.is_star[cand], near.radius[cand], cfg.catalog.margin_arcsec)]
            if not len(hit):
                continue
            rows = near.row[hit]
            on[rows] = True
            stars[rows[near.is_star[hit]]] = True
            for f in units_by_key[_key(u)]:
                if f not in per_filter:  # (not setdefault: that would allocate n_src bools every call)
                    per_filter[f], bright[f] = np.zeros(n_src, bool), np.zeros(n_src, bool)
                per_filter[f][rows] = True
                bright[f][rows[near.mags[f][hit] < 24]] = True
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
