"""Whole-column checks of a catalog that bad-row cleaning cannot do: repeated ids, units that contradict the config.

Bad rows (NaN, out-of-range values) are dropped and counted by the reader; these problems concern the
whole catalog and are refused in one line naming the column and the fix:

- ids are the key that matches simulated sources to the truth: a repeated or non-finite id would
  silently mismatch the science check;
- a column whose declared unit (FITS TUNITn, ECSV datatype unit) says it is not what the config
  says (RA/Dec in degrees, radius in catalog.radius_unit, magnitudes in catalog.mag_unit) would be
  read as if it were.

Both raise `error` (the reader's CatalogError), so this module depends on nothing but numpy and astropy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MAG_UNITS = {"mag", "abmag", "ab", "mag(ab)", "mag_ab", ""}


def _plain(value: object) -> object:
    """A numpy scalar as the Python value (its repr in a message is `42`, not `np.int64(42)`)."""
    return value.item() if isinstance(value, np.generic) else value


ID_FIX = "give every source a unique id (the key that matches simulated sources to the truth)"


def check_ids(ids: np.ndarray, column: str, path: Path, error: Callable[[str], Exception], first_row: int = 0) -> None:
    """Every id finite and unique (O(n log n): fine for tens of millions of rows); `first_row` is the
    file row of ids[0], for the message."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "f":
        bad = ~np.isfinite(ids)
        if bad.any():
            raise error(f"catalog.columns.id: column {column!r} in {path} has {int(bad.sum())} non-finite ids "
                        f"(first in row {first_row + int(np.flatnonzero(bad)[0])}); {ID_FIX}")
    if ids.dtype.kind == "O":
        ids = ids.astype(str)
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        repeated = uniq[counts > 1]
        rows = (first_row + np.flatnonzero(ids == repeated[0])[:3]).tolist()
        raise error(f"catalog.columns.id: column {column!r} in {path} repeats {len(repeated)} ids (e.g. "
                    f"{_plain(repeated[0])!r} in rows {', '.join(map(str, rows))}); {ID_FIX}")


class CatalogIds:
    """Uniqueness of an id column read chunk by chunk, across the whole catalog.

    A chunked read (catalog/prepared.py) checks each chunk as it goes; an id repeated in two chunks
    is only seen here: every chunk's ids go into one array (the id column alone, 8 bytes a row for
    integer ids: 240 MB for DREaM's 3e7 rows, against GBs for the catalog), sorted in place at the
    end. The rows of a repeat are found again (`rows_of`) only when there is one."""

    def __init__(self, n_rows: int, column: str, path: Path, error: Callable[[str], Exception]):
        self.column, self.path, self.error = column, path, error
        self._ids: np.ndarray | None = None
        self._n_rows = n_rows

    def add(self, ids: np.ndarray, start: int) -> None:
        ids = np.asarray(ids)
        if ids.dtype.kind == "O":
            ids = ids.astype(str)
        if self._ids is None:
            self._ids = np.empty(self._n_rows, dtype=ids.dtype)
        elif np.result_type(self._ids, ids) != self._ids.dtype:  # e.g. a wider string in a later chunk
            self._ids = self._ids.astype(np.result_type(self._ids, ids))
        self._ids[start:start + len(ids)] = ids

    def check(self, rows_of: Callable[[object], list[int]]) -> None:
        """Raise `error` (one line, the column, a repeated id and its rows) if any id repeats;
        `rows_of(value)` gives the file rows holding that id."""
        if self._ids is None or len(self._ids) < 2:
            return
        ids, self._ids = self._ids, None
        ids.sort()  # in place: no second copy of the column
        same = ids[1:] == ids[:-1]
        if not same.any():
            return
        n_repeated = int(np.count_nonzero(same[1:] & ~same[:-1]) + same[0])  # runs of equal ids
        value = ids[1:][same][0]
        del ids, same
        rows = rows_of(value)[:3]
        raise self.error(f"catalog.columns.id: column {self.column!r} in {self.path} repeats {n_repeated} ids "
                         f"(e.g. {_plain(value)!r} in rows {', '.join(map(str, rows))}); {ID_FIX}")


def catalog_ids(inputs: Any, column: str, error: Callable[[str], Exception]) -> CatalogIds | None:
    """The catalog-wide id check of opened catalog `inputs` (tables.Inputs), None without an id column
    (the row numbers are the ids then)."""
    if "id" not in inputs.columns:
        return None
    return CatalogIds(inputs.n_rows, column, inputs.main.path, error)


def rows_with_id(inputs: Any, value: Any, chunk_rows: int) -> list[int]:
    """The first file rows holding id `value` (a second pass over the id column, on the error path only)."""
    rows: list[int] = []
    for start in range(0, inputs.n_rows, chunk_rows):
        ids = np.asarray(inputs.read("id", start, start + chunk_rows))
        rows += (start + np.flatnonzero(ids.astype(str) == str(value) if ids.dtype.kind == "O" else ids == value)).tolist()
        if len(rows) >= 3:
            break
    return rows


def declared_units(path: Path, kind: str) -> dict[str, str]:
    """Column name -> unit as the file declares it (FITS TUNITn, ECSV header); {} where unknown."""
    try:
        if kind == "fits":
            from astropy.io import fits

            with fits.open(path, memmap=True) as hdul:
                hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None)
                if hdu is None:
                    return {}
                return {c.name: str(c.unit) for c in hdu.columns if c.unit}
        if kind == "ecsv":
            import yaml

            lines = []
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.startswith("#"):
                        break
                    lines.append(line[2:] if line.startswith("# ") else line[1:])
            meta = yaml.safe_load("".join(lines[1:])) or {}  # lines[0] is "%ECSV 1.0"
            return {c["name"]: str(c["unit"]) for c in meta.get("datatype", []) if isinstance(c, dict) and c.get("unit")}
    except Exception:  # an unreadable header is the reader's to report, with its own message
        return {}
    return {}


def check_units(units: dict[str, str], columns: dict[str, str], radius_unit: str, mag_unit: str,
                error: Callable[[str], Exception]) -> None:
    """`columns`: config key -> column name ("ra", "dec", "radius", "mag:F150W" ...)."""
    import astropy.units as u

    def parse(text: str):
        try:
            return u.Unit(text, parse_strict="silent")
        except (ValueError, TypeError):
            return None

    for key, name in columns.items():
        text = units.get(name)
        if not text:
            continue
        unit = parse(text)
        conf = f"catalog.columns.{key.split(':')[0]}"
        if key in ("ra", "dec"):
            if unit != u.deg:
                raise error(f"{conf}: column {name!r} is in {text}, not degrees; convert it to degrees")
        elif key == "radius":
            want = u.arcsec if radius_unit == "arcsec" else u.kpc
            if unit == want:
                continue
            other = "kpc" if radius_unit == "arcsec" else "arcsec"
            hint = (f"set catalog.radius_unit: {other}" if unit is not None and unit == u.Unit(other)
                    else f"convert it to {radius_unit}")
            raise error(f"{conf}: column {name!r} is in {text} but catalog.radius_unit is {radius_unit}; {hint}")
        elif key.startswith("mag"):
            is_mag = text.strip().lower().replace(" ", "") in MAG_UNITS or (unit is not None and unit == u.ABmag)
            if mag_unit == "ABmag" and not is_mag:
                hint = ("set catalog.mag_unit: nJy" if unit is not None and unit == u.nJy
                        else "give AB magnitudes, or fluxes in nJy with catalog.mag_unit: nJy")
                raise error(f"{conf}: column {name!r} is in {text}, not AB magnitudes; {hint}")
            if mag_unit == "nJy" and (unit is None or unit != u.nJy):
                raise error(f"{conf}: column {name!r} is in {text} but catalog.mag_unit is nJy; convert it to nJy "
                            "or set catalog.mag_unit: ABmag")
