"""The source catalog: DREaM reader, column map, unit conversions and the bad-row report.

`load_catalog(cfg)` reads the catalog once per process (FITS, HDF5 or ECSV; DREaM's main table
plus its optional photometry table, `catalog.photometry`; columns mapped in `catalog.columns`, any
case), converts DREaM's units (R_eff kpc -> arcsec with the redshift in `catalog.cosmology`, PA
radians -> degrees, an optional `recenter`), skips bad rows with a one-line report, and indexes
positions in a KD-tree on unit vectors. `read_sources` does the same for a row range, which is how
`catalog/prepared.py` streams a survey-size catalog into its spatially sorted HDF5 (what the runs
read). The files themselves (main + photometry table, the column map) are `catalog/tables.py`;
`selection.select_for_unit` hands each exposure only the sources on its detector footprint (plus
`catalog.margin_arcsec`), and `selection.write_mirage_catalogs` writes Mirage's point-source and
galaxy lists for it. The DREaM-layout mock lives in `catalog/synth.py`.

Mirage conventions (checked in mirage 2.5.0's catalog_seed_image and astropy's Sersic2D): galaxy
`radius` is the half-light radius along the semi-major axis in arcsec (Sersic2D `r_eff`; do not
circularize it), `ellipticity` = 1 - b/a, `pos_angle` is the semi-major axis in degrees East of
North, magnitudes are AB in columns named `nircam_<filter>_magnitude`, and `index` values must be
unique across a unit's catalogs (we use the row number in the catalog file + 1, so a source keeps
its index in every exposure).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.catalog.tables import (  # noqa: F401 (re-exported: the catalog's public names)
    FORMATS,
    CatalogError,
    Inputs,
    TableFile,
    detect_format,
    filters_in,
    missing_column,
    open_inputs,
)
from dream_hpc.config import SurveyConfig
from dream_hpc.plan import footprint

log = logging.getLogger("dream_hpc.catalog")

# Sanity limits for one row (why: the DREaM files carry placeholders such as -99 and unphysical tails)
MAG_TOO_BRIGHT = 5.0  # AB; brighter than this in a deep field is a placeholder, not a source
MAG_UNDETECTED = 40.0  # AB; fainter (or +inf, or flux <= 0) means "no flux in this filter", not a bad row
SERSIC_RANGE = (0.1, 10.0)  # what Mirage/astropy Sersic2D can render sensibly
RADIUS_MAX_KPC = 1000.0  # half-light radii beyond this are not galaxies (see read_sources)


# --- the in-memory catalog -------------------------------------------------------------------
@dataclass
class Sources:
    """Usable catalog rows as column arrays. `row` is the 0-based row in the file (Mirage index - 1)."""

    row: np.ndarray
    id: np.ndarray
    ra: np.ndarray  # deg
    dec: np.ndarray
    redshift: np.ndarray
    sersic: np.ndarray
    radius: np.ndarray  # arcsec, half-light along the semi-major axis
    axis_ratio: np.ndarray  # b/a
    pa: np.ndarray  # deg East of North
    is_star: np.ndarray  # bool
    mags: dict[str, np.ndarray]  # filter -> AB (inf: no flux in that filter)
    mag_limit: float = np.inf

    def __len__(self) -> int:
        return len(self.ra)

    def take(self, idx: Any) -> Sources:
        arrays = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)
                  if f.name not in ("mags", "mag_limit")}
        return Sources(**arrays, mags={k: v[idx] for k, v in self.mags.items()}, mag_limit=self.mag_limit)


@dataclass
class RowReport:
    """What loading found: totals and bad rows per reason (a row may count under several reasons)."""

    path: str
    n_rows: int = 0
    n_good: int = 0
    n_bad: int = 0
    n_faint: int = 0
    mag_limit: float = np.inf
    reasons: dict[str, int] = field(default_factory=dict)
    photometry: str = ""  # the second table, when there is one
    columns: dict[str, str] = field(default_factory=dict)  # config key -> "file:column" as found
    filters_available: list[str] = field(default_factory=list)  # filters the file has magnitudes for

    def add(self, other: RowReport) -> None:
        """Fold the report of another chunk of the same catalog into this one."""
        self.n_rows += other.n_rows
        self.n_good += other.n_good
        self.n_bad += other.n_bad
        self.n_faint += other.n_faint
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mag_limit"] = float(self.mag_limit)
        return out

    def line(self) -> str:
        both = f" + {self.photometry}" if self.photometry else ""
        text = f"catalog {self.path}{both}: {self.n_rows:,} rows, {self.n_good:,} usable"
        if self.n_bad:
            why = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            text += f"; skipped {self.n_bad:,} bad rows ({why})"
        if self.n_faint:
            text += f"; {self.n_faint:,} fainter than catalog.mag_limit={self.mag_limit:g} in every survey filter"
        return text


@dataclass
class Catalog:
    path: Path
    sources: Sources
    report: RowReport
    _tree: Any = field(default=None, repr=False)

    @property
    def tree(self) -> Any:
        """KD-tree on unit vectors (built on first use; wraps RA=0/360 and the poles correctly)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(footprint.unit_vectors(self.sources.ra, self.sources.dec))
        return self._tree

    @functools.cached_property
    def max_galaxy_radius(self) -> float:
        """Once per catalog (why: recomputed per unit, this max over every row was most of a
        16-million-row `catalog check`)."""
        gal = ~self.sources.is_star
        return float(self.sources.radius[gal].max()) if gal.any() else 0.0


# --- reading and converting ----------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _arcsec_per_kpc_grid(cosmology: str) -> tuple[np.ndarray, np.ndarray]:
    import astropy.cosmology

    grid = np.geomspace(1e-4, 30.0, 3000)  # interpolate: the full cosmology integral per row is slow
    return grid, getattr(astropy.cosmology, cosmology).arcsec_per_kpc_proper(grid).value


def _kpc_to_arcsec(radius_kpc: np.ndarray, z: np.ndarray, cosmology: str = "Planck18") -> np.ndarray:
    """Physical (proper) kpc at redshift z to arcsec, in the named astropy cosmology."""
    grid, scale = _arcsec_per_kpc_grid(cosmology)
    return radius_kpc * np.interp(z, grid, scale)


PA_DEGREE_SPAN = 2 * np.pi + 1e-6  # |PA| beyond this cannot be radians


def _check_pa_unit(pa: np.ndarray, galaxies: np.ndarray, unit: str, where: str) -> None:
    """A whole-column unit mistake is one line with the fix, not a catalog of rotated galaxies."""
    vals = np.abs(pa[galaxies & np.isfinite(pa)])
    if not len(vals):
        return
    if unit == "rad" and vals.max() > PA_DEGREE_SPAN:
        raise CatalogError(f"catalog.pa_unit: column {where} holds values up to {vals.max():.4g}, beyond 2 pi, "
                           "so they are degrees, not radians; set catalog.pa_unit: deg")
    if unit == "deg" and len(vals) >= 20 and vals.max() <= PA_DEGREE_SPAN and np.ptp(vals) > 0.5:
        raise CatalogError(f"catalog.pa_unit: column {where} holds only values within 2 pi (max "
                           f"{vals.max():.4g}) over {len(vals):,} galaxies, so they are radians, not degrees; "
                           "set catalog.pa_unit: rad")


def read_sources(cfg: SurveyConfig, filters: list[str], inputs: Inputs | None = None,
                 start: int = 0, stop: int | None = None) -> tuple[Sources, RowReport]:
    """Read, convert and clean rows start..stop of the configured catalog for `filters`.

    Bad rows are counted and skipped, never raised; a missing file or column, or a whole-column
    unit mistake, is one CatalogError line."""
    own = inputs is None
    if inputs is None:
        inputs = open_inputs(cfg, filters)
    try:
        return _read_rows(cfg, filters, inputs, start, inputs.n_rows if stop is None else min(stop, inputs.n_rows))
    finally:
        if own:
            inputs.close()


def _read_rows(cfg: SurveyConfig, filters: list[str], inputs: Inputs, start: int, stop: int) -> tuple[Sources, RowReport]:
    sec, col = cfg.catalog, cfg.catalog.columns
    has = inputs.columns
    main = inputs.main
    ra = inputs.read("ra", start, stop).astype(float)
    dec = inputs.read("dec", start, stop).astype(float)
    n = len(ra)
    is_star = inputs.read("is_star", start, stop).astype(bool) if "is_star" in has else np.zeros(n, bool)
    galaxies = ~is_star

    def gal_col(key: str) -> np.ndarray:
        if key in has:
            return inputs.read(key, start, stop).astype(float)
        if not galaxies.any():
            return np.zeros(n)
        raise missing_column(main, getattr(col, key), key, " (needed for galaxies)")

    if sec.radius_unit == "kpc" and galaxies.any() and "redshift" not in has:
        raise missing_column(main, col.redshift, "redshift", " (needed to convert radius_unit kpc)")
    redshift = inputs.read("redshift", start, stop).astype(float) if "redshift" in has else np.full(n, np.nan)
    sersic, radius = gal_col("sersic"), gal_col("radius")
    axis_ratio, pa = gal_col("axis_ratio"), gal_col("position_angle")
    if "position_angle" in has:
        _check_pa_unit(pa, galaxies, sec.pa_unit, f"{has['position_angle'][1]!r} in {has['position_angle'][0].path}")
    ids = inputs.read("id", start, stop) if "id" in has else np.arange(start + 1, stop + 1)
    mags = {f: inputs.read(f"mag:{f}", start, stop).astype(float) for f in filters}
    if "id" in has:
        from dream_hpc.catalog import column_checks

        # within these rows (the whole file for load_catalog; across chunks: prepared.prepare)
        column_checks.check_ids(ids, col.id, main.path, CatalogError, first_row=start)

    reasons: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        reasons["non-finite position"] = ~(np.isfinite(ra) & np.isfinite(dec))
        reasons["declination outside -90..90"] = np.abs(dec) > 90
        unmatched = np.zeros(n, bool)
        if inputs.phot_rows is not None:
            unmatched = inputs.phot_rows[start:stop] < 0
            reasons["no photometry row (catalog.join_on)"] = unmatched
        for f, m in mags.items():
            if sec.mag_unit == "nJy":  # AB = 31.4 - 2.5 log10(f / nJy); flux <= 0 means no flux
                m = np.where(m > 0, 31.4 - 2.5 * np.log10(np.where(m > 0, m, 1.0)), np.where(np.isnan(m), np.nan, np.inf))
            reasons.setdefault("NaN magnitude", np.zeros(n, bool))
            reasons["NaN magnitude"] |= np.isnan(m) & ~unmatched  # counted once, as unmatched
            reasons.setdefault(f"magnitude brighter than {MAG_TOO_BRIGHT:g} AB", np.zeros(n, bool))
            reasons[f"magnitude brighter than {MAG_TOO_BRIGHT:g} AB"] |= m < MAG_TOO_BRIGHT
            mags[f] = np.where(m > MAG_UNDETECTED, np.inf, m)
        morph_nan = ~(np.isfinite(sersic) & np.isfinite(radius) & np.isfinite(axis_ratio) & np.isfinite(pa))
        if sec.radius_unit == "kpc":
            morph_nan |= ~np.isfinite(redshift)
            reasons["redshift <= 0 (radius in kpc needs it)"] = galaxies & (redshift <= 0)
        reasons["NaN morphology"] = galaxies & morph_nan
        reasons["radius <= 0"] = galaxies & (radius <= 0)
        # a galaxy a degree (or a Mpc) across is a unit mix-up, and would overflow Mirage's stamps
        reasons["radius >= 1 degree"] = galaxies & (radius >= (RADIUS_MAX_KPC if sec.radius_unit == "kpc" else 3600.0))
        reasons["axis ratio outside (0, 1]"] = galaxies & ((axis_ratio <= 0) | (axis_ratio > 1))
        lo, hi = SERSIC_RANGE
        reasons[f"Sersic index outside {lo:g}..{hi:g}"] = galaxies & ((sersic < lo) | (sersic > hi))
    bad = np.zeros(n, bool)
    for mask in reasons.values():
        bad |= mask
    brightest = np.min(np.vstack(list(mags.values())), axis=0) if mags else np.zeros(n)
    faint = ~bad & ~(brightest <= sec.mag_limit)
    keep = ~bad & ~faint

    idx = np.flatnonzero(keep)
    ra, dec, redshift, radius, pa = ra[idx], dec[idx], redshift[idx], radius[idx], pa[idx]
    gal = galaxies[idx]
    if sec.radius_unit == "kpc":  # never circularised: Mirage wants the semi-major r_eff (ellipticity = 1 - q)
        radius = np.where(gal, _kpc_to_arcsec(radius, np.nan_to_num(redshift, nan=1.0), sec.cosmology), radius)
    if sec.pa_unit == "rad":
        pa = np.rad2deg(pa)
    if sec.recenter and len(idx):
        ra, dec = recenter(ra, dec, sec.recenter_from, (cfg.pointings.center_ra, cfg.pointings.center_dec))

    report = RowReport(path=str(main.path), n_rows=n, n_good=int(keep.sum()), n_bad=int(bad.sum()),
                       n_faint=int(faint.sum()), mag_limit=sec.mag_limit,
                       reasons={k: int(v.sum()) for k, v in reasons.items() if v.any()})
    f32 = np.float32  # why: a DREaM-size catalog is tens of millions of rows; positions stay float64
    sources = Sources(row=idx + start, id=np.asarray(ids)[idx], ra=ra % 360.0, dec=dec,
                      redshift=redshift.astype(f32), sersic=sersic[idx].astype(f32),
                      radius=radius.astype(f32), axis_ratio=axis_ratio[idx].astype(f32),
                      pa=(pa % 360.0).astype(f32), is_star=is_star[idx],
                      mags={f: m[idx].astype(f32) for f, m in mags.items()}, mag_limit=sec.mag_limit)
    return sources, report


def recenter(ra: np.ndarray, dec: np.ndarray, source: tuple[float, float],
             target: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Move positions from the catalog centre `source` to `target` (deg) keeping the tangent-plane geometry.

    Gnomonic projection about `source`, then back about `target`: together a rotation of the sphere
    (distances and shapes are kept; north stays north at the centre), unlike the plain RA/Dec shift
    DREaM's author used, which shears a field away from the equator by cos(dec)."""
    x, y = footprint.tangent_offsets(ra, dec, float(source[0]), float(source[1]))
    return footprint.from_tangent(x, y, float(target[0]), float(target[1]))


_CACHE: dict[tuple, Catalog] = {}


def survey_filters(cfg: SurveyConfig) -> list[str]:
    from dream_hpc.plan import pointings

    return pointings.survey_filters(cfg)


def source_stamp(cfg: SurveyConfig) -> tuple:
    """(path, mtime, size) of the catalog's file(s): what a cached or prepared copy is keyed on."""
    out = []
    for rel in (cfg.catalog.path, cfg.catalog.photometry):
        if not rel:
            continue
        path = cfg.resolve(rel)
        try:
            st = path.stat()
            out.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((str(path),))
    return tuple(out)


def describe(inputs: Inputs, report: RowReport, template: str) -> RowReport:
    """Fill in what the report says about the files themselves (columns found, filters available)."""
    report.photometry = str(inputs.phot.path) if inputs.phot is not inputs.main else ""
    report.columns = inputs.mapped()
    report.filters_available = filters_in(inputs.phot, template)
    if inputs.phot is not inputs.main:
        report.filters_available = sorted(set(report.filters_available) | set(filters_in(inputs.main, template)))
    return report


def load_catalog(cfg: SurveyConfig, filters: list[str] | None = None) -> Catalog:
    """The whole configured catalog in memory, read once per process (cached on the files and settings).

    For a survey-size catalog use the prepared catalog instead (`catalog/prepared.py`): it reads only
    the rows near one unit."""
    filters = sorted(set(filters or survey_filters(cfg)))
    key = (source_stamp(cfg), repr(cfg.catalog), tuple(filters), cfg.pointings.center_ra, cfg.pointings.center_dec)
    if key not in _CACHE:
        with open_inputs(cfg, filters) as inputs:
            sources, report = read_sources(cfg, filters, inputs)
            describe(inputs, report, cfg.catalog.columns.mag)
        (log.warning if report.n_bad else log.info)(report.line())
        _CACHE.clear()  # one catalog per process: a new config replaces the old one
        _CACHE[key] = Catalog(path=cfg.resolve(cfg.catalog.path), sources=sources, report=report)
    return _CACHE[key]
