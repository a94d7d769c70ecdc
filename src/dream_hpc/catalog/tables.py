"""The catalog's files: one table read by column and row range, the main + photometry pair, the column map.

DREaM ships two FITS tables, row-aligned: the main one (positions, morphology) and the photometry
one (AB magnitudes). `open_inputs` opens both, resolves every configured column (case-insensitively:
JWST_nircam_F150W and JWST_NIRCam_F150W are one column), checks that the tables line up (or joins
them on `catalog.join_on`) and says in one line which file lacks which column and how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.errors import UserError

FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".fz": "fits", ".h5": "hdf5",
           ".hdf5": "hdf5", ".he5": "hdf5", ".ecsv": "ecsv"}


class CatalogError(UserError):
    """A catalog problem the user can fix (missing file or column, empty footprint), as one line."""


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


class TableFile:
    """One catalog table on disk, read by column and row range (FITS memory-mapped, HDF5 sliced).

    Column names resolve case-insensitively (why: DREaM's photometry is spelled JWST_nircam_F150W in
    its author's code and JWST_NIRCam_F150W elsewhere; both are the same column)."""

    def __init__(self, path: Path, key: str, fmt: str = "auto", dataset: str = "catalog"):
        self.path, self.key = path, key
        if not path.is_file():
            raise CatalogError(f"{key}: {path} not found (make a mock with `dream-hpc catalog synth CONFIG "
                               f"--out {path}` or point {key} at the DREaM file)")
        self.kind = detect_format(path, fmt)
        self._hdul: Any = None
        self._h5: Any = None
        self._table: Any = None
        self._raw: Any = None
        self._block: Any = None
        try:
            if self.kind == "fits":
                from astropy.io import fits

                self._hdul = fits.open(path, memmap=True)
                hdu = next((h for h in self._hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
                if hdu is None:
                    raise CatalogError(f"{key}: {path} has no table extension (is it an image?)")
                self._data = hdu.data
                self.names = list(hdu.columns.names)
                self.n_rows = int(hdu.header.get("NAXIS2", 0))
                self._raw = _raw_layout(hdu, path)
            elif self.kind == "hdf5":
                import h5py

                self._h5 = h5py.File(path, "r")
                if dataset not in self._h5:
                    raise CatalogError(f"catalog.hdf5_dataset: {dataset!r} not in {path} (it has: "
                                       f"{', '.join(self._h5.keys())}); set catalog.hdf5_dataset")
                self._node = self._h5[dataset]
                if isinstance(self._node, h5py.Group):  # one dataset per column
                    self.names = list(self._node.keys())
                    self.n_rows = len(self._node[self.names[0]]) if self.names else 0
                else:  # a compound table (astropy's HDF5 writer)
                    self.names = list(self._node.dtype.names or [])
                    self.n_rows = len(self._node)
            else:
                from astropy.table import Table

                self._table = Table.read(path, format="ascii.ecsv")
                self.names, self.n_rows = list(self._table.colnames), len(self._table)
        except CatalogError:
            self.close()
            raise
        except Exception as e:  # truncated or corrupt files raise many different errors
            self.close()
            raise CatalogError(f"{key}: {path} is not a readable {self.kind.upper()} table ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); re-create or re-download it") from None
        self._lower: dict[str, str] = {}
        for name in self.names:
            self._lower.setdefault(name.lower(), name)

    def find(self, name: str) -> str | None:
        """The file's spelling of column `name` (exact first, then ignoring case), or None."""
        return name if name in self.names else self._lower.get(name.lower())

    def read(self, name: str, start: int = 0, stop: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Column `name` (the file's spelling) for rows start..stop, or for the row numbers `rows`."""
        try:
            if self.kind == "fits" and self._raw is not None and rows is None:
                out = self._raw_column(name, start, self.n_rows if stop is None else min(stop, self.n_rows))
            elif self.kind == "fits":
                col = self._data.field(name)  # a memory map: only the pages touched are read
                out = col[rows] if rows is not None else col[start:stop]
            elif self.kind == "hdf5":
                import h5py

                ds = self._node[name] if isinstance(self._node, h5py.Group) else self._node.fields([name])
                if rows is not None:
                    lo, hi = (int(rows.min()), int(rows.max()) + 1) if len(rows) else (0, 0)
                    out = np.asarray(ds[lo:hi])[rows - lo]
                else:
                    out = ds[start:stop]
                out = out[name] if getattr(out, "dtype", None) is not None and out.dtype.names else out
            else:
                col = np.asarray(self._table[name])
                out = col[rows] if rows is not None else col[start:stop]
        except Exception as e:
            raise CatalogError(f"{self.key}: {self.path} column {name!r} cannot be read ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); re-create or re-download it") from None
        return np.array(out)

    def _raw_column(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start..stop of one column straight from the file (why: a memory map of a multi-GB
        table leaves every page it touched resident, so a streamed pass would hold the whole file)."""
        offset, dtype, conv = self._raw
        if self._block is None or self._block[:2] != (start, stop):
            count = max(stop - start, 0)
            block = np.fromfile(self.path, dtype=dtype, count=count, offset=offset + start * dtype.itemsize)
            if len(block) != count:
                raise OSError(f"truncated: {len(block):,} of {count:,} rows from row {start:,}")
            self._block = (start, stop, block)
        raw = self._block[2][name]
        if conv[name] == "L":
            return raw == ord("T")
        return raw.astype(raw.dtype.newbyteorder("="))

    def close(self) -> None:
        for handle in (self._hdul, self._h5):
            if handle is not None:
                handle.close()
        self._hdul = self._h5 = None

    def __enter__(self) -> TableFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _raw_layout(hdu: Any, path: Path) -> tuple[int, np.dtype, dict[str, str]] | None:
    """(data offset, big-endian record dtype, per-column conversions) of a plain binary table, or None
    (variable-length arrays, ASCII tables, padded rows: read those through astropy's memory map)."""
    from astropy.io import fits

    if not isinstance(hdu, fits.BinTableHDU) or any("P" in c.format or "Q" in c.format or c.bscale is not None
                                                     or c.bzero is not None for c in hdu.columns):
        return None  # scaled (e.g. unsigned) columns: astropy's conversion is the reference
    fields = []
    for name in hdu.columns.names:
        dt = hdu.columns.dtype[name]
        base, shape = (dt.subdtype if dt.subdtype else (dt, ()))
        base = base.newbyteorder(">") if base.kind in "iufc" and base.itemsize > 1 else base
        fields.append((name, base, shape) if shape else (name, base))
    dtype = np.dtype(fields)
    if dtype.itemsize != int(hdu.header.get("NAXIS1", -1)):
        return None
    offset = int(hdu.fileinfo()["datLoc"])
    if offset + dtype.itemsize * int(hdu.header.get("NAXIS2", 0)) > os.path.getsize(path):
        raise OSError("the table is shorter than its header says (truncated)")
    return offset, dtype, {c.name: str(c.format)[-1] for c in hdu.columns}


def _shown(names: list[str]) -> str:
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def missing_column(table: TableFile, name: str, key: str, what: str = "") -> CatalogError:
    return CatalogError(f"catalog.columns.{key}: column {name!r}{what} not in {table.path} (it has: "
                        f"{_shown(table.names)}); map the right name in catalog.columns.{key}")


def filters_in(table: TableFile, template: str) -> list[str]:
    """NIRCam filters whose magnitude column (per the `{filter}` template) the table has, any case."""
    import re

    head, _, tail = template.partition("{filter}")
    pattern = re.compile(re.escape(head) + r"(F\d{3}[WMN]2?)" + re.escape(tail) + "$", re.IGNORECASE)
    return sorted({m.group(1).upper() for n in table.names if (m := pattern.match(n))})


@dataclass
class Inputs:
    """The opened catalog: the main table, the photometry table (maybe the same) and the column map."""

    main: TableFile
    phot: TableFile
    columns: dict[str, tuple[TableFile, str]]  # config key (or "mag:F150W") -> (table, its spelling)
    phot_rows: np.ndarray | None  # joined on an id: photometry row for each main row (-1: none)
    n_rows: int

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        table, name = self.columns[key]
        if table is self.phot and self.phot_rows is not None:
            rows = self.phot_rows[start:stop]
            out = np.full(len(rows), np.nan)
            ok = rows >= 0
            if ok.any():
                out[ok] = table.read(name, rows=rows[ok])
            return out
        return table.read(name, start, stop)

    def mapped(self) -> dict[str, str]:
        """config key -> 'file:column' for the report."""
        return {k: f"{t.path.name}:{n}" for k, (t, n) in self.columns.items()}

    def close(self) -> None:
        self.main.close()
        self.phot.close()

    def __enter__(self) -> Inputs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_inputs(cfg: SurveyConfig, filters: list[str]) -> Inputs:
    """Open the main (and photometry) table and map every configured column; one-line errors."""
    sec, col = cfg.catalog, cfg.catalog.columns
    main = TableFile(cfg.resolve(sec.path), "catalog.path", sec.format, sec.hdf5_dataset)
    phot = main
    try:
        if sec.photometry:
            phot = TableFile(cfg.resolve(sec.photometry), "catalog.photometry", sec.format, sec.hdf5_dataset)
        columns: dict[str, tuple[TableFile, str]] = {}
        for key in ("ra", "dec"):
            name = main.find(getattr(col, key))
            if name is None:
                raise missing_column(main, getattr(col, key), key)
            columns[key] = (main, name)
        for key in ("id", "is_star", "redshift", "sersic", "radius", "axis_ratio", "position_angle"):
            name = main.find(getattr(col, key))
            if name is not None:
                columns[key] = (main, name)
        for f in filters:
            wanted = col.mag.format(filter=f)
            name = phot.find(wanted)
            if name is None and phot is not main:
                name_main = main.find(wanted)
                if name_main is not None:
                    columns[f"mag:{f}"] = (main, name_main)
                    continue
            if name is None:
                have = filters_in(phot, col.mag)
                hint = f" (filters it has: {', '.join(have)})" if have else ""
                raise CatalogError(f"catalog.columns.mag: column {wanted!r} (for {f}) not in {phot.path}{hint}; "
                                   f"add {f} to the catalog, drop it from instrument.filter_pairs, or map the "
                                   f"magnitude names in catalog.columns.mag (it has: {_shown(phot.names)})")
            columns[f"mag:{f}"] = (phot, name)
        phot_rows = None
        if phot is not main:
            if sec.join_on:
                phot_rows = _join_rows(main, phot, sec.join_on)
            elif phot.n_rows != main.n_rows:
                raise CatalogError(f"catalog.photometry: {phot.path} has {phot.n_rows:,} rows but {main.path} has "
                                   f"{main.n_rows:,}; the two must be row-aligned (the same galaxies in the same "
                                   "order), or set catalog.join_on to an id column present in both")
        _check_declared_units(sec, columns)
        return Inputs(main=main, phot=phot, columns=columns, phot_rows=phot_rows, n_rows=main.n_rows)
    except Exception:
        main.close()
        phot.close()
        raise


def _join_rows(main: TableFile, phot: TableFile, on: str) -> np.ndarray:
    names = [(t, t.find(on)) for t in (main, phot)]
    for t, name in names:
        if name is None:
            raise CatalogError(f"catalog.join_on: column {on!r} not in {t.path} (it has: {_shown(t.names)}); "
                               "name an id column present in both tables, or leave join_on empty for row-aligned tables")
    main_id, phot_id = (t.read(n) for t, n in names)
    order = np.argsort(phot_id, kind="stable")
    sorted_ids = phot_id[order]
    if len(sorted_ids) > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise CatalogError(f"catalog.join_on: column {on!r} of {phot.path} repeats ids; make them unique "
                           "or join on another column")
    pos = np.clip(np.searchsorted(sorted_ids, main_id), 0, max(len(sorted_ids) - 1, 0))
    found = (sorted_ids[pos] == main_id) if len(sorted_ids) else np.zeros(len(main_id), bool)
    return np.where(found, order[pos] if len(order) else -1, -1).astype(np.int64)


def _check_declared_units(sec: Any, columns: dict[str, tuple[TableFile, str]]) -> None:
    """A column whose file declares a unit that contradicts the config (degrees, arcsec or kpc, AB mag) is
    one CatalogError line naming it, checked once per file (catalog/column_checks.py)."""
    from dream_hpc.catalog import column_checks

    for table in {id(t): t for t, _ in columns.values()}.values():
        mine = {key: name for key, (t, name) in columns.items()
                if t is table and (key in ("ra", "dec", "radius") or key.startswith("mag:"))}
        if mine and table.kind in ("fits", "ecsv"):
            column_checks.check_units(column_checks.declared_units(table.path, table.kind), mine,
                                      sec.radius_unit, sec.mag_unit, CatalogError)
