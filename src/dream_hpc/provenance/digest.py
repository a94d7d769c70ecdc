"""Science digests: one sha256 per product over exactly what `compare` compares, never the headers.

A product's file checksum changes with every run (jwst and Mirage write DATE, file names and
versions into the headers), so it cannot tell another cluster's run that it reproduced this one.
The science digest can: it is the sha256 of the science arrays (per product type, SCIENCE_EXTENSIONS),
the columns of a source catalog, or the parsed content of an association, in a canonical form,
so two products have the same digest exactly when `compare` would find them identical (bit for bit;
NaN equals NaN and -0.0 equals 0.0, as in `compare_arrays`). The engine records it with each
product (`science_sha256` of stage_done and mosaic_done); `compare` computes it for the products
it has and checks them against the record when the other run's files are not there.

Scheme (docs/provenance.md, "science digest v1"): sha256 over, per compared part in order, a line
`<name>|<dtype>|<shape>\\n` then the part's bytes (numbers little-endian, C order; text UTF-8,
NUL-separated); JSON as canonical text without IGNORED_JSON_KEYS; any other file: its bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

SCHEME = "dream-hpc science digest v1"
# Science arrays compared per product type (file suffix); other suffixes: every image extension.
SCIENCE_EXTENSIONS = {
    "uncal": ("SCI", "ZEROFRAME", "REFOUT"),
    "rate": ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"),
    "rateints": ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"),
    "cal": ("SCI", "ERR", "DQ", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"),
    "crf": ("SCI", "ERR", "DQ"),
    "i2d": ("SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT"),
    "segm": ("SCI",),
}
# Keys of JSON products (associations) that carry software versions or pool names, not science.
IGNORED_JSON_KEYS = ("code_version", "version_id", "asn_pool", "asn_id")
# Products that are pictures of other products: not science, and their bytes carry renderer metadata.
PREVIEW_SUFFIXES = (".png", ".jpg", ".pdf", ".svg")

log = logging.getLogger(__name__)


def suffix(rel: str) -> str:
    """jwst product type from a file name: ..._cal.fits -> cal."""
    stem = Path(rel).name.split(".", 1)[0]
    return stem.rsplit("_", 1)[-1] if "_" in stem else ""


def strip_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: strip_json(v) for k, v in obj.items() if k not in IGNORED_JSON_KEYS}
    if isinstance(obj, list):
        return [strip_json(v) for v in obj]
    return obj


def is_preview(rel: str) -> bool:
    return rel.lower().endswith(PREVIEW_SUFFIXES)


def _update(h: Any, name: str, a: np.ndarray) -> None:
    a = np.asarray(a)
    if a.dtype.kind == "f":
        # the equality compare_arrays uses: any NaN equals any NaN, -0.0 equals 0.0
        a = a.astype(a.dtype.newbyteorder("<"), copy=True)
        a += 0
        a[np.isnan(a)] = np.nan
    elif a.dtype.kind in "biuc":
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    else:  # text (table columns): compared as strings
        h.update(f"{name}|str|{a.shape}\n".encode())
        h.update("\x00".join(a.astype(str).ravel().tolist()).encode())
        return
    h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
    h.update(np.ascontiguousarray(a).data)


def fits_digest(path: Path) -> str:
    from astropy.io import fits

    h = hashlib.sha256()
    # memmap cannot scale BZERO arrays (uint16 uncal, uint32 DQ); one product at a time fits in memory
    with fits.open(path, memmap=False) as f:
        names = SCIENCE_EXTENSIONS.get(suffix(path.name))
        if names is None:
            names = tuple(dict.fromkeys(hdu.name for hdu in f if hdu.is_image and hdu.data is not None))
        for ext in names:
            if ext in f and f[ext].data is not None:
                _update(h, ext, f[ext].data)
    return h.hexdigest()


def table_digest(path: Path) -> str:
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    t = Table.read(path, format="ascii.ecsv")
    h = hashlib.sha256(f"rows {len(t)}\n".encode())
    for name in t.colnames:
        col = t[name]
        if isinstance(col, SkyCoord):
            _update(h, f"{name}.ra", np.asarray(col.ra.deg))
            _update(h, f"{name}.dec", np.asarray(col.dec.deg))
        else:
            _update(h, name, np.asarray(col))
    return h.hexdigest()


def json_digest(path: Path) -> str:
    text = json.dumps(strip_json(json.loads(path.read_text())), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def science_digest(path: str | Path) -> str:
    """The science digest of one product (raises OSError/ValueError/TypeError if it cannot be read)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".fits", ".fits.gz")):
        return fits_digest(p)
    if name.endswith(".ecsv"):
        return table_digest(p)
    if name.endswith(".json"):
        return json_digest(p)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def science_digests(root: Path, outputs: dict[str, str]) -> dict[str, str]:
    """relpath -> science digest for a stage's outputs (previews skipped).

    A product that cannot be read back gets no digest (a warning, not a failed stage): `compare`
    then says it could not check that product against the record, rather than guessing.
    """
    out = {}
    for rel in sorted(outputs):
        if is_preview(rel):
            continue
        try:
            out[rel] = science_digest(root / rel)
        except (OSError, ValueError, TypeError, KeyError) as e:
            log.warning("%s: no science digest recorded (%s: %s)", rel, type(e).__name__, e)
    return out
