"""Which sources fall on one unit: a KD-tree on the sky, the exact detector outline, Mirage source lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.catalog.reader import Catalog, CatalogError, Sources
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint

GALAXY_EXTENT = 2.0  # galaxies within margin + 2 Re of a detector still put light on it


# --- spatial selection -----------------------------------------------------------------------
def on_outline(ap: str, v2: np.ndarray, v3: np.ndarray, is_star: np.ndarray, radius: np.ndarray,
               margin_arcsec: float) -> np.ndarray:
    """Which telescope-frame positions (v2, v3 arcsec) are on aperture `ap` grown by the margin (galaxies
    also by GALAXY_EXTENT x their radius): the one predicate of every selection."""
    x, y = footprint.tel_to_idl(ap, v2, v3)
    allowed = margin_arcsec + np.where(is_star, 0.0, GALAXY_EXTENT * radius)
    points, outline = np.column_stack([x, y]), footprint.outline_ideal(ap)
    # only points within the outline's bounding box grown by the largest allowance need the exact distance
    grow = float(allowed.max()) if len(allowed) else 0.0
    lo, hi = outline.min(axis=0) - grow, outline.max(axis=0) + grow
    near = np.all((points >= lo) & (points <= hi), axis=1)
    outside = np.full(len(points), np.inf)
    outside[near] = footprint.distance_outside(points[near], outline)
    return outside <= allowed


def _footprint_test(catalog: Catalog, unit: WorkUnit, margin_arcsec: float, idx: np.ndarray) -> np.ndarray:
    """Of candidate indices `idx`, those on the unit's aperture outline grown by the margin."""
    src = catalog.sources
    ap = footprint.aperture_name(unit.detector, unit.subarray)
    att = footprint.unit_attitude(unit.ra, unit.dec, unit.pa_v3, ap)
    v2, v3 = footprint.tel_of(att, src.ra[idx], src.dec[idx])
    return idx[on_outline(ap, v2, v3, src.is_star[idx], src.radius[idx], margin_arcsec)]


def _search_radius(catalog: Catalog, unit: WorkUnit, margin_arcsec: float) -> float:
    ap = footprint.aperture_name(unit.detector, unit.subarray)
    reach = float(np.hypot(*footprint.outline_ideal(ap).T).max())  # ideal origin = reference point
    return reach + margin_arcsec + GALAXY_EXTENT * catalog.max_galaxy_radius + 1.0


def select_for_unit(catalog: Any, unit: WorkUnit, margin_arcsec: float) -> Sources:
    """Sources on the unit's detector footprint plus `margin_arcsec` (galaxies also + 2 Re), in file-row order.

    `catalog` is an in-memory Catalog (searched through its KD-tree), or a prepared one
    (catalog/prepared.py), of which only the rows near the unit are read."""
    if hasattr(catalog, "near_unit"):
        near = catalog.near_unit(unit, margin_arcsec)
        src = near.sources
        if not len(src):
            return src
        # a few cells' rows: a conservative RA/Dec box around the search disc (no trigonometry per
        # row, no KD-tree built for one query), then the exact outline test
        r = _search_radius(near, unit, margin_arcsec) / 3600.0
        cos_dec = np.cos(np.deg2rad(min(abs(unit.dec) + r, 89.999)))
        dra = np.abs((src.ra - unit.ra + 180.0) % 360.0 - 180.0)
        idx = np.flatnonzero((np.abs(src.dec - unit.dec) <= r) & (dra * cos_dec <= r))
        idx = _footprint_test(near, unit, margin_arcsec, idx)
        return src.take(idx[np.argsort(src.row[idx], kind="stable")])
    if not len(catalog.sources):
        return catalog.sources.take(np.zeros(0, int))
    centre = footprint.unit_vectors([unit.ra], [unit.dec])[0]
    radius = _search_radius(catalog, unit, margin_arcsec)
    idx = np.sort(np.asarray(catalog.tree.query_ball_point(centre, footprint.chord(radius)), dtype=int))
    return catalog.sources.take(_footprint_test(catalog, unit, margin_arcsec, idx))


def select_brute_force(catalog: Catalog, unit: WorkUnit, margin_arcsec: float) -> Sources:
    """The same selection by testing every source (reference for tests and the benchmark)."""
    idx = np.arange(len(catalog.sources))
    return catalog.sources.take(_footprint_test(catalog, unit, margin_arcsec, idx))


# --- Mirage source lists ---------------------------------------------------------------------
def write_mirage_catalogs(sources: Sources, unit: WorkUnit, outdir: str | Path) -> dict[str, Path | None]:
    """Mirage 'pointsource' and 'galaxyListFile' lists for `unit` (None where a kind has no source)."""
    from astropy.table import Table

    from dream_hpc.core.rundir import atomic_path

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    mag = sources.mags.get(unit.filter)
    if mag is None:
        raise CatalogError(f"{unit.unit_id}: the loaded catalog has no {unit.filter} magnitudes "
                           "(load it with the survey's filters: load_catalog(cfg))")
    usable = np.isfinite(mag) & (mag <= sources.mag_limit)
    mag_col = f"nircam_{unit.filter.lower()}_magnitude"
    out: dict[str, Path | None] = {"pointsource": None, "galaxyListFile": None}
    for key, kind, chosen in (("pointsource", "pointsources", usable & sources.is_star),
                              ("galaxyListFile", "galaxies", usable & ~sources.is_star)):
        if not chosen.any():
            continue
        s = sources.take(chosen)
        table = Table()
        table["index"] = s.row + 1
        table["x_or_RA"] = s.ra
        table["y_or_Dec"] = s.dec
        comments = ["position_RA_Dec", "abmag"]
        if kind == "galaxies":
            table["radius"] = s.radius.astype(float)
            table["ellipticity"] = 1.0 - s.axis_ratio.astype(float)
            table["pos_angle"] = s.pa.astype(float) % 360.0
            table["sersic_index"] = s.sersic.astype(float)
            comments.append("radius_arcsec")
        table[mag_col] = s.mags[unit.filter].astype(float)
        table.meta["comments"] = comments + [""] * (4 - len(comments))  # Mirage scans the first 4 lines
        for name in ("x_or_RA", "y_or_Dec"):
            table[name].format = ".9f"  # 1e-9 deg = 4 microarcsec
        for name in table.colnames[3:]:
            table[name].format = ".5f"
        final = outdir / f"{unit.unit_id}_{kind}.list"
        with atomic_path(final) as tmp:
            table.write(tmp, format="ascii", overwrite=True)  # as Mirage's own catalog_generator
        out[key] = final
    return out
