"""`catalog check`: what the files hold, bad rows, and the sources on the survey footprint.

The check goes through the prepared catalog (catalog/prepared.py): the catalog is streamed once
into its spatially sorted file (reused while the source files and settings are unchanged), and
each distinct detector footprint reads only the rows near it. Refused when the footprint is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dream_hpc.catalog import footprint_cut, prepared
from dream_hpc.catalog.reader import CatalogError, RowReport
from dream_hpc.catalog.selection import GALAXY_EXTENT, on_outline
from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint


def _key(u: WorkUnit) -> tuple:
    return (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), round(u.pa_v3, 9))


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


def _visit_flags(cat: prepared.PreparedCatalog, margin: float, group: list[WorkUnit],
                 units_by_key: dict[tuple, set[str]]) -> Iterator[tuple[str, np.ndarray, int]]:
    """(filter, flag bytes, first prepared row) for each contiguous row range read for one visit.

    The exposures of a visit (dithers, filter pairs) overlap almost entirely: its rows are read once
    (the union of its detectors' HEALPix cells); each detector then takes its candidates from its own
    cells, decides most of them with the linear half-plane cut (catalog/footprint_cut.py) and gives
    only the rows near an edge the exact test of selection.select_for_unit (same attitude, same
    outline predicate): the same rows as testing every candidate exactly."""
    import healpy

    big = min(cat.max_galaxy_radius, prepared.LARGE_RADIUS_ARCSEC)
    extra = margin + GALAXY_EXTENT * big + 1.0  # prepared.near_unit's reach beyond the outline
    cells = [healpy.query_disc(cat.nside, footprint.unit_vectors([u.ra], [u.dec])[0],
                               np.deg2rad((prepared.unit_reach(u) + extra) / 3600.0), inclusive=True, nest=True)
             for u in group]
    ranges = cat.row_ranges(np.unique(np.concatenate(cells)))
    near = cat.read_ranges(ranges)
    if not len(near):
        return
    starts = np.array([a for a, _ in ranges])
    offsets = np.concatenate([[0], np.cumsum([b - a for a, b in ranges])])
    vec = footprint.unit_vectors(near.ra, near.dec)
    plane = footprint_cut.VisitPlane.about(footprint.unit_vectors([u.ra for u in group], [u.dec for u in group]))
    px, py = plane.project(vec)
    allowed = margin + np.where(near.is_star, 0.0, GALAXY_EXTENT * near.radius)  # as selection.on_outline
    grow = margin + GALAXY_EXTENT * cat.max_galaxy_radius + 1.0  # every row's allowance, with room
    hit: dict[str, np.ndarray] = {}
    for u, own in zip(group, cells, strict=True):
        pieces = []
        for a, b in cat.row_ranges(own):  # each lies inside one range of the visit's (a subset of its cells)
            i = int(np.searchsorted(starts, a, side="right")) - 1
            pieces.append(np.arange(offsets[i] + a - starts[i], offsets[i] + b - starts[i]))
        cand = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        ap = footprint.aperture_name(u.detector, u.subarray)
        att = footprint.unit_attitude(u.ra, u.dec, u.pa_v3, ap)
        cut = footprint_cut.edge_cut(plane, ap, att, grow)
        if cut is None:
            sure, edge = cand[:0], cand
        else:
            inside, maybe = cut.split(px[cand], py[cand], allowed[cand])
            sure, edge = cand[inside], cand[maybe]
        v2, v3 = footprint_cut.tel_of_vectors(att, vec[edge])
        edge = edge[on_outline(ap, v2, v3, near.is_star[edge], near.radius[edge], margin)]
        for f in units_by_key[_key(u)]:
            if f not in hit:
                hit[f] = np.zeros(len(near), bool)
            hit[f][sure] = True
            hit[f][edge] = True
    for f, h in hit.items():
        fl = h.astype(np.uint8) | ((h & near.is_star).astype(np.uint8) << 1) | ((h & (near.mags[f] < 24)).astype(np.uint8) << 2)
        for (a, _), o0, o1 in zip(ranges, offsets[:-1], offsets[1:], strict=True):
            yield f, fl[o0:o1], a


def check_catalog(cfg: SurveyConfig, units: list[WorkUnit], prepared_path: Path | None = None) -> CatalogCheck:
    """Prepare (or reuse) the survey's catalog and count what falls on the plan; raises CatalogError
    (one line) when the files are unusable or nothing is on the footprint."""
    result = prepared.prepare(cfg, units, prepared_path)
    cat = prepared.open_prepared(result.path)
    # per filter, one flag byte per prepared row (each source row is in the file once): bit 1 on the
    # footprint in that filter, 2 also a star, 4 also brighter than AB 24
    flags: dict[str, np.ndarray] = {}
    units_by_key: dict[tuple, set[str]] = {}
    for u in units:
        units_by_key.setdefault(_key(u), set()).add(u.filter)
    for group in _by_visit(units):
        for f, visit_flags, start in _visit_flags(cat, cfg.catalog.margin_arcsec, group, units_by_key):
            if f not in flags:
                flags[f] = np.zeros(cat.n_rows, np.uint8)
            flags[f][start:start + len(visit_flags)] |= visit_flags
    on = np.zeros(cat.n_rows, bool)
    for fl in flags.values():
        on |= fl > 0
    if not on.any():
        span = (f"catalog spans RA {cat.span[0]:.4f}..{cat.span[1]:.4f}, Dec {cat.span[2]:.4f}..{cat.span[3]:.4f}"
                if cat.span else "catalog has no usable rows")
        ras, decs = [u.ra for u in units], [u.dec for u in units]
        hint = ("check pointings.center_ra/center_dec or catalog.recenter_from" if cfg.catalog.recenter
                else "check pointings.center_ra/center_dec or set catalog.recenter: true")
        raise CatalogError(f"catalog {cfg.resolve(cfg.catalog.path)}: no sources in the survey footprint (pointings "
                           f"at RA {min(ras):.4f}..{max(ras):.4f}, Dec {min(decs):.4f}..{max(decs):.4f}; {span}); {hint}")
    counts = {f: {"sources": int(np.count_nonzero(fl & 1)), "stars": int(np.count_nonzero(fl & 2)),
                  "bright": int(np.count_nonzero(fl & 4))} for f, fl in sorted(flags.items())}
    return CatalogCheck(report=cat.report, n_in_footprint=int(on.sum()), per_filter=counts,
                        survey_filters=sorted({u.filter.upper() for u in units}), area_deg2=cat.area_deg2,
                        prepared=result.path)
