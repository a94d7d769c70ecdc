"""A DREaM-like mock catalog for any footprint, so the demo and the tests need no download.

Galaxies: magnitudes in a reference band (F150W) drawn from a broken power-law number count, then
redshift, a simple SED (continuum slope, Balmer and Lyman breaks) giving colours across the NIRCam
filters, a size-magnitude relation, and a disk/bulge mix of Sersic indices and axis ratios. Stars
follow `catalog.synth.star_density_arcmin2` and `star_mag_range` and are flagged `is_star`.
Everything is drawn from one generator seeded by the survey seed, and written in the config's
catalog column names and units, in DREaM's layout when the config reads DREaM's layout: a main
FITS table (RA, Dec, redshift, R_eff in kpc, q, n_s, PA in radians) centred on (0, 0) when
`catalog.recenter` is set, plus the row-aligned photometry table `catalog.photometry`
(JWST_nircam_<filter> AB magnitudes). So the demo and the tests go through the reader path a
real DREaM file takes. `--out x.ecsv` with no `catalog.photometry` writes one hand-editable table.

The model is deliberately simple: it is a test scene with realistic densities, not a galaxy
formation model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint

# Differential galaxy counts per mag per deg^2 in F150W (AB): a broken power law with the shape of
# the PEARLS NIRCam counts (Windhorst et al. 2023, AJ 165, 13: a break near AB 21, ~0.4 dex/mag
# brighter and ~0.2-0.3 dex/mag fainter), normalised to ~5.6e4 /mag/deg^2 at AB 24, which gives
# ~360 galaxies/arcmin^2 brighter than AB 28.5 (HUDF-like deep-field densities).
COUNT_LOG_N24 = 4.75
COUNT_SLOPE_FAINT = 0.25  # dex per mag, m >= COUNT_BREAK
COUNT_SLOPE_BRIGHT = 0.40  # dex per mag, m < COUNT_BREAK
COUNT_BREAK = 21.0
BRIGHTEST_GALAXY = 16.0
REFERENCE_FILTER = "F150W"
PIVOT_UM = {"F070W": 0.704, "F090W": 0.901, "F115W": 1.154, "F140M": 1.404, "F150W": 1.501, "F150W2": 1.659,
            "F162M": 1.626, "F164N": 1.644, "F182M": 1.845, "F187N": 1.874, "F200W": 1.990, "F210M": 2.093,
            "F212N": 2.120, "F250M": 2.503, "F277W": 2.786, "F300M": 2.996, "F322W2": 3.247, "F323N": 3.237,
            "F335M": 3.365, "F356W": 3.563, "F360M": 3.621, "F405N": 4.055, "F410M": 4.092, "F430M": 4.280,
            "F444W": 4.421, "F460M": 4.630, "F466N": 4.654, "F470N": 4.707, "F480M": 4.834}
WIDE_FILTERS = ("F070W", "F090W", "F115W", "F150W", "F200W", "F277W", "F356W", "F444W")


def log_counts(m: np.ndarray) -> np.ndarray:
    """log10 of the galaxy counts per mag per deg^2 at F150W magnitude m (the model above)."""
    m = np.asarray(m, float)
    faint = COUNT_LOG_N24 + COUNT_SLOPE_FAINT * (m - 24.0)
    at_break = COUNT_LOG_N24 + COUNT_SLOPE_FAINT * (COUNT_BREAK - 24.0)
    return np.where(m >= COUNT_BREAK, faint, at_break + COUNT_SLOPE_BRIGHT * (m - COUNT_BREAK))


def _draw_from_counts(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    grid = np.linspace(lo, hi, 2001)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (10 ** log_counts(grid[1:]) + 10 ** log_counts(grid[:-1])))])
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, grid)


def expected_galaxies(area_deg2: float, lo: float, hi: float) -> float:
    grid = np.linspace(lo, hi, 2001)
    return float(np.trapezoid(10 ** log_counts(grid), grid) * area_deg2)


def synth_rng(survey_seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"dream-hpc:{survey_seed}:catalog-synth".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def footprint_box(units: list[WorkUnit], margin_arcsec: float) -> tuple[float, float, tuple[float, float, float, float]]:
    """Tangent point and (xmin, xmax, ymin, ymax) arcsec box covering every unit outline plus a margin."""
    v = footprint.unit_vectors([u.ra for u in units], [u.dec for u in units]).mean(axis=0)
    ra0 = float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0)
    dec0 = float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))
    xs, ys = [], []
    seen: set[tuple] = set()
    for u in units:
        key = (u.detector, u.subarray, round(u.ra, 8), round(u.dec, 8), u.pa_v3)
        if key in seen:
            continue
        seen.add(key)
        ra, dec = footprint.outline_sky(u.ra, u.dec, u.pa_v3, footprint.aperture_name(u.detector, u.subarray))
        x, y = footprint.tangent_offsets(ra, dec, ra0, dec0)
        xs.extend(x)
        ys.extend(y)
    m = margin_arcsec
    return ra0, dec0, (min(xs) - m, max(xs) + m, min(ys) - m, max(ys) + m)


def _sed_offsets(lam_um: np.ndarray, z: np.ndarray, slope: np.ndarray, balmer: np.ndarray) -> np.ndarray:
    """AB magnitude offsets (n_src, n_filter) of a toy SED: power-law continuum plus breaks."""
    rest = lam_um[None, :] / (1.0 + z[:, None])
    mags = slope[:, None] * np.log10(lam_um[None, :] / PIVOT_UM[REFERENCE_FILTER])
    mags = mags + np.where(rest < 0.40, balmer[:, None], 0.0)  # Balmer/4000 A break
    return mags + np.where(rest < 0.1216, 4.0, 0.0)  # Lyman break (IGM): dropouts


def synthesize(cfg: SurveyConfig, units: list[WorkUnit]) -> Any:
    """An astropy Table of galaxies and stars covering `units` (plus catalog.synth.margin_arcsec)."""
    from astropy.table import Table

    syn, col = cfg.catalog.synth, cfg.catalog.columns
    rng = synth_rng(cfg.survey.seed)
    ra0, dec0, (x0, x1, y0, y1) = footprint_box(units, syn.margin_arcsec)
    area_arcmin2 = (x1 - x0) * (y1 - y0) / 3600.0
    filters = sorted(set(WIDE_FILTERS) | {u.filter for u in units}, key=lambda f: PIVOT_UM[f])
    lam = np.array([PIVOT_UM[f] for f in filters])
    # Galaxies: drawn one mag past the limit so that redder filters also reach it.
    hi = syn.mag_limit + 1.0
    n_gal = rng.poisson(syn.density_scale * expected_galaxies(area_arcmin2 / 3600.0, BRIGHTEST_GALAXY, hi))
    m_ref = _draw_from_counts(rng, n_gal, BRIGHTEST_GALAXY, hi)
    quiescent = rng.uniform(size=n_gal) < np.clip(0.35 - 0.05 * (m_ref - 20.0), 0.05, 0.35)
    z = np.clip((0.4 + 0.3 * np.clip(m_ref - 18.0, 0, None)) * 10 ** rng.normal(0, 0.2, n_gal), 0.02, 10.0)
    slope = np.where(quiescent, rng.normal(-1.5, 0.4, n_gal), rng.normal(-0.6, 0.5, n_gal))
    balmer = np.where(quiescent, 1.2, 0.3)
    offsets = _sed_offsets(lam, z, slope, balmer)
    ref_i = filters.index(REFERENCE_FILTER)
    gal_mags = m_ref[:, None] + offsets - offsets[:, [ref_i]]
    # size-magnitude relation (semi-major half-light radius, arcsec): ~0.2" at AB 24, 0.1" at 28
    log_re = -0.7 - 0.08 * (m_ref - 24.0) - np.where(quiescent, 0.15, 0.0) + rng.normal(0, 0.2, n_gal)
    radius = np.clip(10 ** log_re, 0.02, 5.0)
    sersic = np.clip(np.where(quiescent, 10 ** rng.normal(0.55, 0.12, n_gal), 10 ** rng.normal(0.0, 0.15, n_gal)),
                     0.3, 8.0)
    axis_ratio = np.where(quiescent, 0.5 + 0.5 * rng.beta(2.0, 1.5, n_gal), 0.1 + 0.9 * rng.beta(2.0, 1.4, n_gal))
    pa = rng.uniform(0.0, 180.0, n_gal)
    keep = gal_mags.min(axis=1) <= syn.mag_limit
    # Stars: dN/dm rising 0.1 dex/mag (high latitude), colours of cool dwarfs (fainter at long wavelengths).
    n_star = rng.poisson(syn.star_density_arcmin2 * area_arcmin2)
    lo_s, hi_s = syn.star_mag_range
    u = rng.uniform(size=n_star)
    a = 0.1 * np.log(10.0)
    m_star = np.log(np.exp(a * lo_s) + u * (np.exp(a * hi_s) - np.exp(a * lo_s))) / a
    star_slope = rng.normal(1.3, 0.4, n_star)
    star_mags = m_star[:, None] + star_slope[:, None] * np.log10(lam[None, :] / PIVOT_UM[REFERENCE_FILTER])

    n_g, n = int(keep.sum()), int(keep.sum()) + n_star
    xy = rng.uniform([x0, y0], [x1, y1], size=(n, 2))
    ra, dec = footprint.from_tangent(xy[:, 0], xy[:, 1], ra0, dec0)
    if cfg.catalog.recenter:  # written where the catalog says it is (DREaM: on 0, 0); the reader moves it back
        from dream_hpc.catalog.reader import recenter

        ra, dec = recenter(ra, dec, (cfg.pointings.center_ra, cfg.pointings.center_dec), cfg.catalog.recenter_from)
        ra = np.where(ra > 180.0, ra - 360.0, ra)  # DREaM's RA runs -0.5..0.5 about 0
    table = Table()
    table[col.id] = np.arange(1, n + 1)
    table[col.ra] = ra
    table[col.dec] = dec
    table[col.redshift] = np.concatenate([z[keep], np.zeros(n_star)])
    for i, f in enumerate(filters):
        table[col.mag.format(filter=f)] = np.concatenate([gal_mags[keep, i], star_mags[:, i]]).astype(np.float32)
    table[col.sersic] = np.concatenate([sersic[keep], np.zeros(n_star)]).astype(np.float32)
    table[col.radius] = np.concatenate([radius[keep], np.zeros(n_star)]).astype(np.float32)
    table[col.axis_ratio] = np.concatenate([axis_ratio[keep], np.ones(n_star)]).astype(np.float32)
    table[col.position_angle] = np.concatenate([pa[keep], np.zeros(n_star)]).astype(np.float32)
    table[col.is_star] = np.concatenate([np.zeros(n_g, bool), np.ones(n_star, bool)])
    table.meta.update({"generator": "dream-hpc catalog synth (DREaM-like mock)", "survey_seed": cfg.survey.seed,
                       "tangent_point": [ra0, dec0], "area_arcmin2": area_arcmin2,
                       "density_scale": syn.density_scale, "count_model": "Windhorst+2023-like broken power law"})
    _to_config_units(table, cfg)
    return table


def _to_config_units(table: Any, cfg: SurveyConfig) -> None:
    """Write radii and magnitudes in the units the config says the catalog uses (so it reads back)."""
    from dream_hpc.catalog.reader import _kpc_to_arcsec

    col = cfg.catalog.columns
    if cfg.catalog.radius_unit == "kpc":
        z = np.asarray(table[col.redshift], float)
        gal = ~np.asarray(table[col.is_star], bool)
        z = np.where(gal, np.maximum(z, 1e-3), 1.0)  # stars: a placeholder redshift (their radius is 0)
        table[col.redshift] = np.where(gal, z, 0.0)
        per_kpc = _kpc_to_arcsec(np.ones(len(z)), z, cfg.catalog.cosmology)
        table[col.radius] = (np.asarray(table[col.radius], float) / per_kpc).astype(np.float32)
    if cfg.catalog.pa_unit == "rad":
        table[col.position_angle] = np.deg2rad(np.asarray(table[col.position_angle], float)).astype(np.float32)
    if cfg.catalog.mag_unit == "nJy":
        for name in list(table.colnames):
            if name.startswith(col.mag.split("{")[0]) and name != col.is_star:
                table[name] = (10 ** (-0.4 * (np.asarray(table[name], float) - 31.4))).astype(np.float32)


def _write_one(table: Any, path: Path, cfg: SurveyConfig) -> Path:
    from dream_hpc.catalog.reader import CatalogError, detect_format
    from dream_hpc.core.rundir import atomic_path

    name = path.name.lower()
    if not any(name.endswith(s) for s in (".ecsv", ".fits", ".fit", ".h5", ".hdf5")):
        raise CatalogError(f"{path}: choose a .ecsv, .fits or .h5 file name for the mock catalog")
    kind = detect_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if kind == "fits":
            import warnings

            from astropy.io.fits.verify import VerifyWarning

            with warnings.catch_warnings():  # long provenance keywords become HIERARCH cards: intended
                warnings.simplefilter("ignore", VerifyWarning)
                table.write(tmp, format="fits", overwrite=True)
        elif kind == "hdf5":
            table.write(tmp, format="hdf5", path=cfg.catalog.hdf5_dataset, overwrite=True, serialize_meta=True)
        else:
            table.write(tmp, format="ascii.ecsv", overwrite=True)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # a shared input: readable by the group, unlike mkstemp's 0600
    return path


def split_photometry(table: Any, cfg: SurveyConfig) -> tuple[Any, Any]:
    """DREaM's two tables: (main without magnitudes and ids, photometry with only the magnitudes)."""
    col = cfg.catalog.columns
    head, _, tail = col.mag.partition("{filter}")
    mags = [c for c in table.colnames if c.startswith(head) and c.endswith(tail) and c != col.is_star]
    main = table[[c for c in table.colnames if c not in mags and c != col.id]]
    phot = table[mags]
    for t in (main, phot):
        t.meta = dict(table.meta)
    return main, phot


def write_table(table: Any, path: str | Path, cfg: SurveyConfig, photometry: str | Path | None = None) -> list[Path]:
    """Write the mock atomically (ECSV, FITS or HDF5 by suffix): one table, or DREaM's pair.

    `photometry` (default: the config's `catalog.photometry`, if set) receives the magnitudes and
    `path` the rest, row-aligned, as DREaM is distributed."""
    path = Path(path)
    if photometry is None and cfg.catalog.photometry:
        photometry = cfg.resolve(cfg.catalog.photometry)
    if not photometry:
        return [_write_one(table, path, cfg)]
    main, phot = split_photometry(table, cfg)
    return [_write_one(main, path, cfg), _write_one(phot, Path(photometry), cfg)]
