"""Prepare once, read little: the survey's catalog as one spatially sorted HDF5 file with an index.

A DREaM-size catalog (~3e7 rows over 1 deg^2) held whole by every rank costs GBs per rank. So the
catalog is prepared once per survey (rank 0, before the units; or `dream-hpc catalog prepare`):

- streamed through the reader in chunks of `CHUNK_ROWS` (bad rows counted and skipped, units
  converted: radii arcsec, PA degrees East of North, positions degrees after any `recenter`, AB
  magnitudes for the survey's filters only, rows fainter than `catalog.mag_limit` in every survey
  filter dropped);
- cut to the survey footprint plus a margin (the HEALPix cells within reach of some unit);
- sorted by nested HEALPix cell (`catalog.prepared_nside`), with an index of the occupied cells
  (cell, first row, row count), so the rows near one detector are a few contiguous h5py slices.

Galaxies with a semi-major radius above `LARGE_RADIUS_ARCSEC` are few but reach far: they are kept
in pseudo-cell -1, which every lookup reads, so that ordinary lookups need not grow their search
disc by the largest galaxy in the catalog.

The file records what it was made from (`key`: the source files' path/size/mtime, the catalog
settings, the filters, the footprint); a changed source or config re-prepares it, an unchanged one
is reused (resumable: written to a temporary name and renamed when complete).

Writing and reading the file are one concern, kept in one module so that its layout (the compound
`sources` dataset, the cell index, the attributes) is defined in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.catalog import column_checks
from dream_hpc.catalog.reader import (
    Catalog,
    CatalogError,
    RowReport,
    Sources,
    describe,
    open_inputs,
    read_sources,
    source_stamp,
)
from dream_hpc.catalog.selection import GALAXY_EXTENT
from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint

log = logging.getLogger("dream_hpc.catalog")

FORMAT_VERSION = 2  # 2: one compound "sources" dataset
CHUNK_ROWS = 1_000_000  # rows per streamed chunk: ~100 MB of columns in flight
LARGE_RADIUS_ARCSEC = 5.0  # galaxies larger than this go to the always-read pseudo-cell -1
BIG_CELL = -1
FIELDS = ("row", "id", "ra", "dec", "redshift", "sersic", "radius", "axis_ratio", "pa", "is_star")


# --- where and for what ----------------------------------------------------------------------
def cache_dir() -> Path:
    base = os.environ.get("DREAM_HPC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dream-hpc")
    return Path(base) / "catalogs"


def unit_reach(unit: WorkUnit) -> float:
    """arcsec from the unit's pointing (its aperture reference point) to its farthest outline corner."""
    ap = footprint.aperture_name(unit.detector, unit.subarray)
    return float(np.hypot(*footprint.outline_ideal(ap).T).max())


def _footprints(units: list[WorkUnit]) -> list[tuple]:
    """Each distinct (detector, subarray, pointing) once: filters and repeats share a footprint."""
    seen: dict[tuple, WorkUnit] = {}
    for u in units:
        seen.setdefault((u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), round(u.pa_v3, 9)), u)
    return sorted(seen)


def prepare_key(cfg: SurveyConfig, units: list[WorkUnit]) -> str:
    """What a prepared file depends on: the source files, the catalog settings, filters and footprint."""
    sec = dataclasses.asdict(cfg.catalog)
    sec.pop("synth", None)  # how a mock is drawn does not change how a file is read
    sec.pop("prepared_keep", None)  # nor how many old files the cache keeps
    payload = {"version": FORMAT_VERSION, "sources": source_stamp(cfg), "catalog": sec,
               "filters": sorted({u.filter.upper() for u in units}),
               "center": [cfg.pointings.center_ra, cfg.pointings.center_dec],
               "footprints": _footprints(units)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def default_path(cfg: SurveyConfig, units: list[WorkUnit]) -> Path:
    return cache_dir() / f"{cfg.survey.name}-{prepare_key(cfg, units)[:20]}.h5"


def footprint_cells(units: list[WorkUnit], margin_arcsec: float, nside: int) -> np.ndarray:
    """Sorted nested HEALPix cells within reach of some unit (outline + margin + 2 x the large-galaxy radius)."""
    import healpy

    cells: list[np.ndarray] = []
    for det, sub, ra, dec, _pa in _footprints(units):
        u = next(x for x in units if (x.detector, x.subarray) == (det, sub))
        reach = unit_reach(u) + margin_arcsec + GALAXY_EXTENT * LARGE_RADIUS_ARCSEC + 1.0
        vec = footprint.unit_vectors([ra], [dec])[0]
        cells.append(healpy.query_disc(nside, vec, np.deg2rad(reach / 3600.0), inclusive=True, nest=True))
    return np.unique(np.concatenate(cells)) if cells else np.zeros(0, np.int64)


# --- preparing -------------------------------------------------------------------------------
@dataclass
class PrepareResult:
    path: Path
    reused: bool
    seconds: float
    n_rows: int  # rows in the prepared file
    report: RowReport


def _append(group: Any, name: str, values: np.ndarray) -> None:
    if name not in group:
        group.create_dataset(name, data=values, maxshape=(None,), chunks=(min(max(len(values), 1), 1 << 16),))
        return
    ds = group[name]
    n = ds.shape[0]
    ds.resize((n + len(values),))
    ds[n:] = values


def _hull_points(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """The convex-hull vertices (tangent-plane arcsec) of a chunk: enough to measure the sky area later."""
    if len(ra) < 3:
        return np.column_stack(footprint.tangent_offsets(ra, dec, ra0, dec0))
    from scipy.spatial import ConvexHull, QhullError

    xy = np.column_stack(footprint.tangent_offsets(ra, dec, ra0, dec0))
    try:
        return xy[ConvexHull(xy).vertices]
    except QhullError:  # all on a line
        return xy


def hull_area_deg2(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(points).volume) / 3600.0**2  # 2-D "volume" is the area
    except QhullError:
        return 0.0


def prepare(cfg: SurveyConfig, units: list[WorkUnit], out: Path | None = None,
            chunk_rows: int = CHUNK_ROWS) -> PrepareResult:
    """Write (or reuse) the prepared catalog for `units`; see the module docstring."""
    import h5py
    import healpy

    t0 = time.monotonic()
    in_cache = not out
    out = Path(out) if out else default_path(cfg, units)
    key = prepare_key(cfg, units)
    if (done := _reusable(out, key)) is not None:
        return PrepareResult(out, True, time.monotonic() - t0, *done)
    cached = default_path(cfg, units)
    if not in_cache and (done := _reusable(cached, key)) is not None:
        # `catalog check` or `plan` already prepared this very file in the user cache: the run takes a
        # link to it (a copy across file systems) instead of reading the whole catalog again
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp-{out.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(cached, tmp)
        except OSError:
            shutil.copyfile(cached, tmp)
        os.replace(tmp, out)
        log.info("prepared catalog %s: the user cache's %s (same source and footprint)", out, cached)
        return PrepareResult(out, True, time.monotonic() - t0, *done)
    sec = cfg.catalog
    nside = sec.prepared_nside
    filters = sorted({u.filter.upper() for u in units})
    allowed = footprint_cells(units, sec.margin_arcsec, nside)
    ra0, dec0 = cfg.pointings.center_ra, cfg.pointings.center_dec
    out.parent.mkdir(parents=True, exist_ok=True)
    stage_path = out.with_name(f".tmp-{out.name}.{os.getpid()}.staging")
    final_tmp = out.with_name(f".tmp-{out.name}.{os.getpid()}")
    report: RowReport | None = None
    hull: list[np.ndarray] = []
    span = [np.inf, -np.inf, np.inf, -np.inf]  # RA, Dec range of every usable row (for the off-footprint message)
    try:
        with open_inputs(cfg, filters) as inputs, h5py.File(stage_path, "w") as stage:
            ids = column_checks.catalog_ids(inputs, cfg.catalog.columns.id, CatalogError)
            for start in range(0, max(inputs.n_rows, 1), chunk_rows):
                src, rep = read_sources(cfg, filters, inputs, start, start + chunk_rows)
                if ids is not None:  # each chunk was checked on its own; repeats across chunks: below
                    ids.add(inputs.read("id", start, start + chunk_rows), start)
                if report is None:
                    report = rep
                else:
                    report.add(rep)
                if not len(src):
                    continue
                hull.append(_hull_points(src.ra, src.dec, ra0, dec0))
                span = [min(span[0], float(src.ra.min())), max(span[1], float(src.ra.max())),
                        min(span[2], float(src.dec.min())), max(span[3], float(src.dec.max()))]
                cell = healpy.ang2pix(nside, src.ra, src.dec, nest=True, lonlat=True).astype(np.int64)
                big = ~src.is_star & (src.radius > LARGE_RADIUS_ARCSEC)
                keep = np.isin(cell, allowed) | big
                cell = np.where(big, BIG_CELL, cell)
                kept = src.take(keep)
                _append(stage, "cell", cell[keep])
                for name in FIELDS:
                    _append(stage, name, np.asarray(getattr(kept, name)))
                for f in filters:
                    _append(stage, f"mag_{f}", kept.mags[f])
            assert report is not None
            if ids is not None:
                ids.check(lambda value: column_checks.rows_with_id(inputs, value, chunk_rows))
            describe(inputs, report, sec.columns.mag)
        report.path = str(cfg.resolve(sec.path))
        area = hull_area_deg2(np.concatenate(hull)) if hull else 0.0
        _write_sorted(stage_path, final_tmp, nside, filters, key, report, area, cfg, span)
        os.replace(final_tmp, out)
    finally:
        for p in (stage_path, final_tmp):
            p.unlink(missing_ok=True)
    with h5py.File(out, "r") as h5:
        n = int(h5.attrs["n_rows"])
    seconds = time.monotonic() - t0
    if in_cache and cfg.catalog.prepared_keep > 0:  # a new one per change of source or settings: keep a few
        from dream_hpc.catalog import prepared_cache

        for old in prepared_cache.prune(out.parent, cfg.catalog.prepared_keep, cfg.survey.name, protect=(out,)):
            log.info("removed the older prepared catalog %s (catalog.prepared_keep=%d)", old, cfg.catalog.prepared_keep)
    (log.warning if report.n_bad else log.info)(report.line())
    log.info("prepared catalog %s: %s rows near the footprint (%.1f s)", out, f"{n:,}", seconds)
    return PrepareResult(out, False, seconds, n, report)


def _reusable(path: Path, key: str) -> tuple[int, RowReport] | None:
    """(rows, bad-row report) of a complete prepared file made for `key`, else None."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("key") == key and h5.attrs.get("complete"):
                return int(h5.attrs["n_rows"]), _report_from(h5)
    except OSError:
        pass  # unreadable leftovers are replaced
    return None


def _write_sorted(stage_path: Path, out: Path, nside: int, filters: list[str], key: str, report: RowReport,
                  area_deg2: float, cfg: SurveyConfig, span: list[float]) -> None:
    """Sort the staged rows by cell (stable: file order within a cell), one column at a time."""
    import h5py

    with h5py.File(stage_path, "r") as stage, h5py.File(out, "w") as h5:
        n = stage["cell"].shape[0] if "cell" in stage else 0
        cell = stage["cell"][:] if n else np.zeros(0, np.int64)
        order = np.argsort(cell, kind="stable")
        cell = cell[order]
        # one compound dataset: a lookup reads each row range once, not once per column
        names = [*FIELDS, *(f"mag_{f}" for f in filters)]
        dtype = np.dtype([(name, stage[name].dtype if n else _EMPTY_DTYPES.get(name, np.float32)) for name in names])
        table = h5.create_dataset("sources", shape=(n,), dtype=dtype, chunks=(min(max(n, 1), 1 << 13),) if n else None)
        # column by column (one staged column in memory at a time), written in blocks of the compound
        block = 1 << 20
        for name in names:
            col = stage[name][:] if n else np.zeros(0)
            for a in range(0, n, block):
                table[a:a + block, name] = col[order[a:a + block]]
            del col
        cells, starts, counts = np.unique(cell, return_index=True, return_counts=True)
        idx = h5.create_group("index")
        idx["cell"], idx["start"], idx["count"] = cells.astype(np.int64), starts.astype(np.int64), counts.astype(np.int64)
        gal = ~stage["is_star"][:] if n else np.zeros(0, bool)
        radius = stage["radius"][:] if n else np.zeros(0, np.float32)
        h5.attrs.update({
            "format": "dream-hpc prepared catalog", "format_version": FORMAT_VERSION, "key": key,
            "nside": nside, "ordering": "nested", "filters": json.dumps(filters), "n_rows": n,
            "report": json.dumps(report.to_dict()), "area_deg2": area_deg2,
            "max_galaxy_radius_arcsec": float(radius[gal].max()) if gal.any() else 0.0,
            "large_radius_arcsec": LARGE_RADIUS_ARCSEC, "cosmology": cfg.catalog.cosmology,
            "radius_unit_in": cfg.catalog.radius_unit, "pa_unit_in": cfg.catalog.pa_unit,
            "recenter": json.dumps([cfg.catalog.recenter, list(cfg.catalog.recenter_from),
                                    [cfg.pointings.center_ra, cfg.pointings.center_dec]]),
            "sources": json.dumps(source_stamp(cfg)), "span": json.dumps(span if np.isfinite(span[0]) else []),
            "complete": True,
        })


_EMPTY_DTYPES = {"row": np.int64, "id": np.int64, "ra": np.float64, "dec": np.float64, "is_star": bool}


def _report_from(h5: Any) -> RowReport:
    data = json.loads(h5.attrs["report"])
    return RowReport(**data)


# --- reading little --------------------------------------------------------------------------
class PreparedCatalog:
    """Lookups in a prepared file: the rows near a position, read through the cell index."""

    def __init__(self, path: Path):
        import h5py

        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
            attrs = self._h5.attrs
            if attrs.get("format_version") != FORMAT_VERSION or not attrs.get("complete"):
                raise OSError("not a complete prepared catalog of this version")
        except OSError as e:
            raise CatalogError(f"{self.path}: not a usable prepared catalog ({e}); delete it and run "
                               "`dream-hpc catalog prepare CONFIG` again") from None
        self.nside = int(attrs["nside"])
        self.filters: list[str] = json.loads(attrs["filters"])
        self.n_rows = int(attrs["n_rows"])
        self.area_deg2 = float(attrs["area_deg2"])
        self.max_galaxy_radius = float(attrs["max_galaxy_radius_arcsec"])
        self.report = _report_from(self._h5)
        self.span: list[float] = json.loads(attrs["span"])
        idx = self._h5["index"]
        self._cells, self._starts, self._counts = idx["cell"][:], idx["start"][:], idx["count"][:]
        self._data = self._h5["sources"]
        self.mag_limit = float(self.report.mag_limit)

    def close(self) -> None:
        self._h5.close()

    def row_ranges(self, cells: np.ndarray) -> list[tuple[int, int]]:
        """Contiguous row ranges of the occupied `cells`, the large galaxies' cell included."""
        return self._ranges(np.asarray(cells, np.int64))

    def _ranges(self, cells: np.ndarray) -> list[tuple[int, int]]:
        """Contiguous row ranges of the occupied `cells` (sorted), the large galaxies' cell included."""
        cells = np.union1d(cells, [BIG_CELL])
        pos = np.searchsorted(self._cells, cells)
        ok = pos < len(self._cells)
        pos, cells = pos[ok], cells[ok]
        pos = pos[self._cells[pos] == cells]
        ranges: list[tuple[int, int]] = []
        for p in np.unique(pos):
            a, b = int(self._starts[p]), int(self._starts[p] + self._counts[p])
            if ranges and ranges[-1][1] == a:
                ranges[-1] = (ranges[-1][0], b)  # neighbouring cells are neighbouring rows
            else:
                ranges.append((a, b))
        return ranges

    def read_ranges(self, ranges: list[tuple[int, int]]) -> Sources:
        """The rows of `ranges` as Sources (columns are views of one record array read in place)."""
        rec = np.empty(sum(b - a for a, b in ranges), dtype=self._data.dtype)
        at = 0
        for a, b in ranges:
            if b > a:
                self._data.read_direct(rec, np.s_[a:b], np.s_[at:at + b - a])
                at += b - a
        return Sources(**{name: rec[name] for name in FIELDS}, mags={f: rec[f"mag_{f}"] for f in self.filters},
                       mag_limit=self.mag_limit)

    def near(self, ra: float, dec: float, radius_arcsec: float) -> Catalog:
        """A small in-memory Catalog of the rows in cells within `radius_arcsec` (plus the large galaxies)."""
        import healpy

        vec = footprint.unit_vectors([ra], [dec])[0]
        cells = healpy.query_disc(self.nside, vec, np.deg2rad(radius_arcsec / 3600.0), inclusive=True, nest=True)
        sources = self.read_ranges(self._ranges(cells))
        return Catalog(path=self.path, sources=sources, report=self.report)

    def near_unit(self, unit: WorkUnit, margin_arcsec: float) -> Catalog:
        """The rows that can put light on `unit` (what selection.select_for_unit then cuts exactly)."""
        big = min(self.max_galaxy_radius, LARGE_RADIUS_ARCSEC)
        return self.near(unit.ra, unit.dec, unit_reach(unit) + margin_arcsec + GALAXY_EXTENT * big + 1.0)

    def sample_positions(self, max_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray, float]:
        """(ra, dec, weight) of at most `max_rows` rows spread over the whole survey, each standing for
        `weight` rows: a density map (the footprint figure) without reading every row.

        Every k-th row of the cell-sorted file: about the same fraction of every cell, so the density
        stays unbiased whatever order the source file had."""
        if not self.n_rows:
            return np.zeros(0), np.zeros(0), 1.0
        step = max(1, -(-self.n_rows // max(max_rows, 1)))
        pos = self._data.fields(["ra", "dec"])[::step]
        return np.asarray(pos["ra"], float), np.asarray(pos["dec"], float), self.n_rows / len(pos)

    def everything(self) -> Catalog:
        """All prepared rows (the survey area): for whole-survey figures and checks, not for a unit."""
        return Catalog(path=self.path, sources=self.read_ranges([(0, self.n_rows)] if self.n_rows else []),
                       report=self.report)


_OPEN: dict[tuple, PreparedCatalog] = {}


def open_prepared(path: Path) -> PreparedCatalog:
    """One open handle per file per process (reopened when the file is replaced)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _OPEN:
        for old in _OPEN.values():
            old.close()
        _OPEN.clear()
        _OPEN[key] = PreparedCatalog(path)
    return _OPEN[key]


RUN_FILE = Path("catalog") / "prepared.h5"


def for_run(cfg: SurveyConfig, run_root: Path | None, units: list[WorkUnit] | None = None) -> PreparedCatalog:
    """The run's prepared catalog (rank 0 wrote it before any unit), else one prepared for `units`
    (or the whole plan) in the user cache: a stage called outside the engine still reads little."""
    if run_root is not None and (Path(run_root) / RUN_FILE).is_file():
        return open_prepared(Path(run_root) / RUN_FILE)
    if units is None:
        from dream_hpc.plan.pointings import make_plan

        units = make_plan(cfg)
    return open_prepared(prepare(cfg, units).path)
