"""The local absolute-astrometry catalog tweakreg aligns to: made from the truth, with its errors.

A real survey aligns to Gaia (stars to G ~ 21, sub-mas to a few mas per source once propagated to the
epoch) or, on small fields with too few Gaia stars, to an HST/ground catalog tied to Gaia (COSMOS ACS
F814W: ~10 mas per source). This writes such a catalog from the input (truth) catalog: the sources on
the exposures brighter than `mag_limit` in one reference band (the survey's first SW filter, standing
in for G or F814W), each displaced by a seeded Gaussian error that grows from `error_bright_mas` to
`error_faint_mas` over the last 5 magnitudes. One realization per survey (seeded by the survey seed
and the source's row), so every filter aligns to the same catalog, as to one Gaia release.
Never a network query: the file is tweakreg's `abs_refcat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.rundir import atomic_path
from dream_hpc.core.workunit import WorkUnit, derive_seed

COMPACT_GALAXY_ARCSEC = 0.3  # hst kind: galaxies with a larger half-light radius centroid too poorly


def reference_band(cfg: Any) -> str:
    return str(cfg.instrument.filter_pairs[0][0]).upper()


def position_error_mas(cfg: Any, mag: np.ndarray) -> np.ndarray:
    """Per-axis 1-sigma position error for sources of `mag` in the reference band."""
    rc = cfg.simulation.reference_catalog
    lo, hi = float(rc.error_bright_mas), float(rc.error_faint_mas)
    frac = np.clip((np.asarray(mag, float) - (rc.mag_limit - 5.0)) / 5.0, 0.0, 1.0)
    if lo <= 0.0:
        return hi * frac
    return lo * (hi / lo) ** frac


def write_reference_catalog(cfg: Any, units: Sequence[WorkUnit], path: Path,
                            run_root: Path | None = None) -> dict[str, Any]:
    """ECSV (RA, DEC in deg; the truth displaced by the catalog's errors) of the reference sources
    on the units' detectors; returns what it holds (n, kind, band, median error, density)."""
    from astropy.table import Table

    from dream_hpc.catalog import prepared, reader
    from dream_hpc.catalog.selection import select_for_unit
    from dream_hpc.plan import footprint

    rc = cfg.simulation.reference_catalog
    # the run's prepared catalog (only the rows near these exposures are read) when there is one: a
    # visit's astrometry task then holds a few cells' rows, not the survey's catalog
    cat = prepared.for_run(cfg, run_root, list(units)) if run_root is not None else reader.load_catalog(cfg)
    band = reference_band(cfg)
    parts: list[tuple[np.ndarray, ...]] = []  # per unit: the reference rows on it
    area_arcsec2 = 0.0
    for unit in units:
        sel = select_for_unit(cat, unit, 0.0)
        mag = np.asarray(sel.mags.get(band, np.full(len(sel), np.inf)), float)
        star = np.asarray(sel.is_star, bool)
        keep = np.isfinite(mag) & (mag <= rc.mag_limit)
        if rc.kind == "gaia":
            keep &= star
        else:  # hst: stars and compact galaxies
            keep &= star | (np.asarray(sel.radius, float) <= COMPACT_GALAXY_ARCSEC)
        parts.append((np.asarray(sel.row, np.int64)[keep], np.asarray(sel.ra, float)[keep],
                      np.asarray(sel.dec, float)[keep], mag[keep], star[keep]))
        outline = footprint.outline_ideal(footprint.aperture_name(unit.detector, unit.subarray))
        x, y = outline[:, 0], outline[:, 1]
        area_arcsec2 = max(area_arcsec2, 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))))
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)] if parts else [np.zeros(0)] * 5
    rows, first = np.unique(cols[0].astype(np.int64), return_index=True)  # each source once, in row order
    ra0, dec0, mag, is_star = (c[first] for c in cols[1:])
    is_star = is_star.astype(bool)
    # one draw per catalog row, seeded by the row: the same source has the same error in every filter
    # and every task, without drawing for the rows of the whole catalog
    base = derive_seed(int(cfg.survey.seed), f"reference_catalog:{rc.kind}", "astrometry")
    noise = np.array([np.random.default_rng([base, int(r)]).standard_normal(2) for r in rows]).reshape(-1, 2)
    sigma = position_error_mas(cfg, mag)
    d = noise * sigma[:, None]  # mas, (East, North)
    dec = dec0 + d[:, 1] / 3.6e6
    ra = ra0 + d[:, 0] / 3.6e6 / np.cos(np.radians(dec))
    table = Table({"RA": ra, "DEC": dec, "mag": mag, "sigma_mas": sigma,
                   "kind": np.where(is_star, "star", "galaxy")})
    table["RA"].format = table["DEC"].format = ".9f"
    table.meta["comments"] = [f"dream-hpc local abs_refcat ({rc.kind}-like, {band} <= {rc.mag_limit}): truth "
                              "positions + seeded per-source errors (sigma_mas per axis)"]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        table.write(f, format="ascii.ecsv")
    return {"n": int(rows.size), "kind": rc.kind, "band": band, "mag_limit": float(rc.mag_limit),
            "median_sigma_mas": float(np.median(sigma)) if rows.size else None,
            "exposure_area_arcmin2": area_arcsec2 / 3600.0}
