"""The source catalog: DREaM reader, column map, unit conversions and the bad-row report.

`load_catalog(cfg)` reads the catalog once per process (FITS, HDF5 or ECSV; columns mapped in
`catalog.columns`), skips bad rows with a one-line report, and indexes positions in a KD-tree on
unit vectors. `select_for_unit` then hands each exposure only the sources on its detector
footprint (plus `catalog.margin_arcsec`), and `write_mirage_catalogs` writes Mirage's point-source
and galaxy lists for it. The DREaM-like mock lives in `catalog_synth`.

Mirage conventions (checked in mirage 2.5.0's catalog_seed_image and astropy's Sersic2D): galaxy
`radius` is the half-light radius along the semi-major axis in arcsec (Sersic2D `r_eff`; do not
circularize it), `ellipticity` = 1 - b/a, `pos_angle` is the semi-major axis in degrees East of
North, magnitudes are AB in columns named `nircam_<filter>_magnitude`, and `index` values must be
unique across a unit's catalogs (we use the row number in the catalog file + 1, so a source keeps
its index in every exposure).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.errors import UserError
from dream_hpc.plan import footprint

log = logging.getLogger("dream_hpc.catalog")

# Sanity limits for one row (why: the DREaM files carry placeholders such as -99 and unphysical tails)
MAG_TOO_BRIGHT = 5.0  # AB; brighter than this in a deep field is a placeholder, not a source
MAG_UNDETECTED = 40.0  # AB; fainter (or +inf, or flux <= 0) means "no flux in this filter", not a bad row
SERSIC_RANGE = (0.1, 10.0)  # what Mirage/astropy Sersic2D can render sensibly
FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".fz": "fits", ".h5": "hdf5",
           ".hdf5": "hdf5", ".he5": "hdf5", ".ecsv": "ecsv"}


RADIUS_MAX_KPC = 1000.0  # half-light radii beyond this are not galaxies (see read_sources)


class CatalogError(UserError):
    """A catalog problem the user can fix (missing file or column, empty footprint), as one line."""


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

    def line(self) -> str:
        text = f"catalog {self.path}: {self.n_rows:,} rows, {self.n_good:,} usable"
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

    @property
    def max_galaxy_radius(self) -> float:
        gal = ~self.sources.is_star
        return float(self.sources.radius[gal].max()) if gal.any() else 0.0


# --- reading ---------------------------------------------------------------------------------
def detect_format(path: Path, fmt: str = "auto") -> str:
    """fits | hdf5 | ecsv, from `catalog.format`, the suffix, or the file's first bytes."""
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for suffix, kind in FORMATS.items():
        if name.endswith(suffix):
            return kind
    head = path.open("rb").read(16)
    if head.startswith(b"SIMPLE"):
        return "fits"
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"# %ECSV"):
        return "ecsv"
    raise CatalogError(f"catalog.path: cannot tell the format of {path} (name it .fits, .h5 or .ecsv, "
                       "or set catalog.format)")


def _read_columns(path: Path, kind: str, dataset: str, wanted: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The `wanted` columns that exist (as arrays) and every column name the file has."""
    if kind == "fits":
        from astropy.io import fits

        with fits.open(path, memmap=True) as hdul:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
            if hdu is None:
                raise CatalogError(f"catalog.path: {path} has no table extension (is it an image?)")
            names = list(hdu.columns.names)
            return {c: np.array(hdu.data[c]) for c in wanted if c in names}, names
    if kind == "hdf5":
        import h5py

        with h5py.File(path, "r") as h5:
            if dataset not in h5:
                raise CatalogError(f"catalog.hdf5_dataset: {dataset!r} not in {path} (it has: "
                                   f"{', '.join(h5.keys())}); set catalog.hdf5_dataset")
            node = h5[dataset]
            if isinstance(node, h5py.Group):  # one dataset per column
                names = list(node.keys())
                return {c: np.array(node[c]) for c in wanted if c in names}, names
            names = list(node.dtype.names or [])  # a compound table (astropy's HDF5 writer)
            return {c: np.array(node[c]) for c in wanted if c in names}, names
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    return {c: np.asarray(table[c]) for c in wanted if c in table.colnames}, list(table.colnames)


def _require(columns: dict[str, np.ndarray], names: list[str], name: str, key: str, path: Path,
             what: str = "") -> np.ndarray:
    if name not in columns:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise CatalogError(f"catalog.columns.{key}: column {name!r}{what} not in {path} (it has: {shown}); "
                           f"map the right name in catalog.columns.{key}")
    return columns[name]


def _kpc_to_arcsec(radius_kpc: np.ndarray, z: np.ndarray) -> np.ndarray:
    from astropy.cosmology import Planck18

    grid = np.geomspace(1e-4, 30.0, 3000)  # interpolate: the full cosmology integral per row is slow
    scale = Planck18.arcsec_per_kpc_proper(grid).value
    return radius_kpc * np.interp(z, grid, scale)


def read_sources(cfg: SurveyConfig, filters: list[str]) -> tuple[Sources, RowReport]:
    """Read, convert and clean the configured catalog for `filters`; never raises on bad rows."""
    sec, col = cfg.catalog, cfg.catalog.columns
    path = cfg.resolve(sec.path)
    if not path.is_file():
        raise CatalogError(f"catalog.path: {path} not found (make a mock with `dream-hpc catalog synth CONFIG "
                           f"--out {path}` or point catalog.path at the DREaM file)")
    kind = detect_format(path, sec.format)
    mag_cols = {f: col.mag.format(filter=f) for f in filters}
    wanted = [col.id, col.ra, col.dec, col.redshift, col.sersic, col.radius, col.axis_ratio,
              col.position_angle, col.is_star, *mag_cols.values()]
    try:
        data, names = _read_columns(path, kind, sec.hdf5_dataset, wanted)
    except CatalogError:
        raise
    except Exception as e:  # truncated or corrupt files raise many different errors
        raise CatalogError(f"catalog.path: {path} is not a readable {kind.upper()} table ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); re-create or re-download it") from None

    from dream_hpc.catalog import column_checks

    column_checks.check_units(column_checks.declared_units(path, kind),
                              {"ra": col.ra, "dec": col.dec, "radius": col.radius,
                               **{f"mag:{f}": c for f, c in mag_cols.items()}}, sec.radius_unit, sec.mag_unit, CatalogError)
    ra = _require(data, names, col.ra, "ra", path).astype(float)
    dec = _require(data, names, col.dec, "dec", path).astype(float)
    n = len(ra)
    is_star = data[col.is_star].astype(bool) if col.is_star in data else np.zeros(n, bool)
    galaxies = ~is_star
    any_gal = bool(galaxies.any())

    def gal_col(name: str, key: str) -> np.ndarray:
        if not any_gal and name not in data:
            return np.zeros(n)
        return _require(data, names, name, key, path, " (needed for galaxies)").astype(float)

    redshift = data[col.redshift].astype(float) if col.redshift in data else np.full(n, np.nan)
    if sec.radius_unit == "kpc" and col.redshift not in data:
        _require(data, names, col.redshift, "redshift", path, " (needed to convert radius_unit kpc)")
    sersic, radius = gal_col(col.sersic, "sersic"), gal_col(col.radius, "radius")
    axis_ratio, pa = gal_col(col.axis_ratio, "axis_ratio"), gal_col(col.position_angle, "position_angle")
    ids = data[col.id] if col.id in data else np.arange(1, n + 1)
    if col.id in data:
        column_checks.check_ids(ids, col.id, path, CatalogError)
    mags = {f: _require(data, names, c, "mag", path, f" (for {f})").astype(float) for f, c in mag_cols.items()}

    reasons: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        reasons["non-finite position"] = ~(np.isfinite(ra) & np.isfinite(dec))
        reasons["declination outside -90..90"] = np.abs(dec) > 90
        for f, m in mags.items():
            if sec.mag_unit == "nJy":  # AB = 31.4 - 2.5 log10(f / nJy); flux <= 0 means no flux
                m = np.where(m > 0, 31.4 - 2.5 * np.log10(np.where(m > 0, m, 1.0)), np.where(np.isnan(m), np.nan, np.inf))
            reasons.setdefault("NaN magnitude", np.zeros(n, bool))
            reasons["NaN magnitude"] |= np.isnan(m)
            reasons.setdefault(f"magnitude brighter than {MAG_TOO_BRIGHT:g} AB", np.zeros(n, bool))
            reasons[f"magnitude brighter than {MAG_TOO_BRIGHT:g} AB"] |= m < MAG_TOO_BRIGHT
            mags[f] = np.where(m > MAG_UNDETECTED, np.inf, m)
        morph_nan = ~(np.isfinite(sersic) & np.isfinite(radius) & np.isfinite(axis_ratio) & np.isfinite(pa))
        if sec.radius_unit == "kpc":
            morph_nan |= ~np.isfinite(redshift)
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

    if sec.radius_unit == "kpc":
        radius = np.where(galaxies, _kpc_to_arcsec(radius, np.nan_to_num(redshift, nan=1.0)), radius)
    if sec.recenter and n:
        ra, dec = _recenter(ra, dec, keep, cfg.pointings.center_ra, cfg.pointings.center_dec)

    report = RowReport(path=str(path), n_rows=n, n_good=int(keep.sum()), n_bad=int(bad.sum()),
                       n_faint=int(faint.sum()), mag_limit=sec.mag_limit,
                       reasons={k: int(v.sum()) for k, v in reasons.items() if v.any()})
    idx = np.flatnonzero(keep)
    f32 = np.float32  # why: a DREaM-size catalog is tens of millions of rows; positions stay float64
    sources = Sources(row=idx, id=np.asarray(ids)[idx], ra=ra[idx] % 360.0, dec=dec[idx],
                      redshift=redshift[idx].astype(f32), sersic=sersic[idx].astype(f32),
                      radius=radius[idx].astype(f32), axis_ratio=axis_ratio[idx].astype(f32),
                      pa=(pa[idx] % 360.0).astype(f32), is_star=is_star[idx],  # same angle, fits float32
                      mags={f: m[idx].astype(f32) for f, m in mags.items()}, mag_limit=sec.mag_limit)
    return sources, report


def _recenter(ra: np.ndarray, dec: np.ndarray, keep: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Move the catalog's centre onto (ra0, dec0) keeping its tangent-plane geometry (DREaM sits at 0, 0)."""
    v = footprint.unit_vectors(ra[keep], dec[keep]).mean(axis=0)
    c_ra, c_dec = np.rad2deg(np.arctan2(v[1], v[0])) % 360.0, np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v)))
    x, y = footprint.tangent_offsets(np.nan_to_num(ra), np.nan_to_num(dec), c_ra, c_dec)
    new_ra, new_dec = footprint.from_tangent(x, y, ra0, dec0)
    return np.where(keep, new_ra, ra), np.where(keep, new_dec, dec)


_CACHE: dict[tuple, Catalog] = {}


def survey_filters(cfg: SurveyConfig) -> list[str]:
    from dream_hpc.plan import pointings

    return pointings.survey_filters(cfg)


def load_catalog(cfg: SurveyConfig, filters: list[str] | None = None) -> Catalog:
    """The configured catalog, read once per process (cached on path, mtime and the catalog settings)."""
    filters = sorted(set(filters or survey_filters(cfg)))
    path = cfg.resolve(cfg.catalog.path)
    try:
        st = path.stat()
        stamp: tuple = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = ()
    key = (str(path), stamp, repr(cfg.catalog), tuple(filters), cfg.pointings.center_ra, cfg.pointings.center_dec)
    if key not in _CACHE:
        sources, report = read_sources(cfg, filters)
        (log.warning if report.n_bad else log.info)(report.line())
        _CACHE.clear()  # one catalog per process: a new config replaces the old one
        _CACHE[key] = Catalog(path=path, sources=sources, report=report)
    return _CACHE[key]
