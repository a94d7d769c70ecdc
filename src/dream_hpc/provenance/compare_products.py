"""Did one product reproduce? Arrays compared where both files are here, else the record's science digest."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.digests import sha256_file
from dream_hpc.provenance.digest import SCIENCE_EXTENSIONS, science_digest, strip_json, suffix

RTOL = 1e-5  # jwst's regression-test tolerance (relative)
ATOL = 1e-7  # and absolute
# Product verdicts. `missing`: A recorded it, B did not produce it (a difference in outcome).
# `unchecked`: nothing to check it with (a file absent and no usable digest, or unreadable): never a difference.
PRODUCT_VERDICTS = ("identical", "within tolerance", "different", "missing", "unchecked")


@dataclass
class ProductDiff:
    path: str
    verdict: str  # one of PRODUCT_VERDICTS
    details: list[str] = field(default_factory=list)
    by: str = "arrays"  # how it was decided: arrays (both files) | record (a file against the other's record)


def compare_arrays(a: np.ndarray, b: np.ndarray, name: str) -> tuple[str, str]:
    """(identical | within tolerance | different, description) for two science arrays."""
    if a.shape != b.shape:
        return "different", f"{name}: shape {a.shape} vs {b.shape}"
    exact = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)
    equal = a == b if exact else (a == b) | np.isnan(a) & np.isnan(b)
    if equal.all():
        return "identical", ""
    af, bf = a.astype(np.float64), b.astype(np.float64)
    close = equal if exact else np.isclose(af, bf, rtol=RTOL, atol=ATOL, equal_nan=True)
    bad = ~close
    n_bad = int(bad.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(af - bf)
        diff[equal] = 0
        rel = np.where(np.abs(bf) > 0, diff / np.abs(bf), np.where(diff > 0, np.inf, 0))
    finite = np.where(np.isfinite(diff), diff, -1)
    where = np.unravel_index(int(np.argmax(finite)), a.shape)
    where_txt = "[" + ", ".join(str(int(i)) for i in where) + "]"
    max_abs = float(diff[where]) if np.isfinite(diff[where]) else float("nan")
    finite_rel = rel[np.isfinite(rel)]
    max_rel = float(finite_rel.max()) if finite_rel.size else float("inf")
    n_diff = int((~equal).sum())
    summary = (f"{name}: {'within tolerance' if n_bad == 0 else 'DIFFERENT'}, {n_diff} of {a.size} pixels differ, max abs {max_abs:.3g} at {where_txt}, "
               f"max rel {max_rel:.3g}")
    if n_bad == 0:
        return "within tolerance", summary
    return "different", summary + f"; {n_bad} beyond rtol {RTOL:g}/atol {ATOL:g}" + (
        " (integer array: must match exactly)" if exact else "")


def _worst(verdicts: list[str]) -> str:
    for v in ("different", "within tolerance"):
        if v in verdicts:
            return v
    return "identical"


def compare_fits(pa: Path, pb: Path) -> tuple[str, list[str]]:
    from astropy.io import fits

    # memmap cannot scale BZERO arrays (uint16 uncal, uint32 DQ); one product at a time fits in memory
    with fits.open(pa, memmap=False) as fa, fits.open(pb, memmap=False) as fb:
        names = SCIENCE_EXTENSIONS.get(suffix(pa.name))
        def image_names(f: Any) -> list[str]:
            return [h.name for h in f if h.is_image and h.data is not None]
        if names is None:
            names = tuple(dict.fromkeys(image_names(fa) + image_names(fb)))
        verdicts, details = [], []
        for ext in names:
            ina, inb = ext in fa and fa[ext].data is not None, ext in fb and fb[ext].data is not None
            if not ina and not inb:
                continue
            if ina != inb:
                verdicts.append("different")
                details.append(f"{ext}: only in {'A' if ina else 'B'}")
                continue
            verdict, text = compare_arrays(np.asarray(fa[ext].data), np.asarray(fb[ext].data), ext)
            verdicts.append(verdict)
            if text:
                details.append(text)
        if not verdicts:
            return "different", ["no science arrays found to compare"]
        return _worst(verdicts), details


def compare_table(pa: Path, pb: Path) -> tuple[str, list[str]]:
    """Source catalogs (ECSV): every column, numbers within tolerance, sky positions in degrees."""
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

    ta, tb = Table.read(pa, format="ascii.ecsv"), Table.read(pb, format="ascii.ecsv")
    if len(ta) != len(tb):
        return "different", [f"{len(ta)} rows vs {len(tb)}"]
    if ta.colnames != tb.colnames:
        return "different", [f"columns differ: {sorted(set(ta.colnames) ^ set(tb.colnames))}"]
    verdicts, details = [], []
    for name in ta.colnames:
        ca, cb = ta[name], tb[name]
        if isinstance(ca, SkyCoord):
            pairs = [(f"{name}.ra", ca.ra.deg, cb.ra.deg), (f"{name}.dec", ca.dec.deg, cb.dec.deg)]
        else:
            pairs = [(name, np.asarray(ca), np.asarray(cb))]
        for label, va, vb in pairs:
            va, vb = np.asarray(va), np.asarray(vb)
            if va.dtype.kind in "biuf" and vb.dtype.kind in "biuf":
                verdict, text = compare_arrays(va, vb, label)
            else:
                same = bool(np.array_equal(va.astype(str), vb.astype(str)))
                verdict, text = ("identical", "") if same else ("different", f"{label}: values differ")
            verdicts.append(verdict)
            if text:
                details.append(text)
    return _worst(verdicts), details


def compare_files(rel: str, pa: Path, pb: Path, recorded_same: bool) -> ProductDiff:
    """Both products present: the same file checksum, else their science content, array by array.

    The files are hashed only when their records say they are the same file (an edit since is then
    caught); records that differ (every real rerun: the headers carry dates) go straight to the arrays.
    """
    if recorded_same and sha256_file(pa) == sha256_file(pb):
        return ProductDiff(rel, "identical", ["same file checksum"])
    if rel.endswith((".fits", ".fits.gz")):
        verdict, details = compare_fits(pa, pb)
    elif rel.endswith(".ecsv"):
        verdict, details = compare_table(pa, pb)
    elif rel.endswith(".json"):
        same = strip_json(json.loads(pa.read_text())) == strip_json(json.loads(pb.read_text()))
        verdict, details = ("identical", []) if same else ("different", ["JSON content differs"])
    else:
        verdict, details = "different", ["file content differs"]
    return ProductDiff(rel, verdict, details)


@dataclass
class Side:
    """One run's product: its file here (if any) and what its record says."""

    name: str  # "A" | "B"
    path: Path
    sha256: str  # recorded file checksum
    science_sha256: str  # recorded science digest ("" in records made before digests)
    present: bool = False

    def __post_init__(self) -> None:
        self.present = self.path.is_file()

    def current(self) -> tuple[str, str, str]:
        """(file sha256, science digest, where from) of the file if present, else of the record."""
        if not self.present:
            return self.sha256, self.science_sha256, f"{self.name}'s record"
        return sha256_file(self.path), science_digest(self.path), f"{self.name}'s file"


def compare_with_record(rel: str, a: Side, b: Side) -> ProductDiff:
    """At least one file absent: decide from the file(s) present and the record(s)."""
    here, there = (a, b) if a.present else (b, a)  # `there` has no file: its record is all there is
    try:
        sha_h, sci_h, from_h = here.current()
    except (OSError, ValueError, TypeError, KeyError) as e:
        if here is b:  # B's own product cannot be read: not a reproduction of a product that could
            return ProductDiff(rel, "different", [f"B's file cannot be read: {e}"], by="record")
        here.present = False  # A's file unreadable: A's record is what there is
        sha_h, sci_h, from_h = here.current()
    sha_t, sci_t, from_t = there.current()
    changed = ([f"{here.name}'s file is not the one its own record names (changed after its run; "
                f"`dream-hpc audit` says more)"] if here.present and here.sha256 and sha_h != here.sha256 else [])
    if sha_h and sha_h == sha_t:
        return ProductDiff(rel, "identical", [f"same file checksum ({from_h}, {from_t})"], by="record")
    if sci_h and sci_t:
        if sci_h == sci_t:
            return ProductDiff(rel, "identical", [f"science digest of {from_h} equals {from_t}'s "
                                                  f"({sci_t[:12]}): bit-identical science arrays"], by="record")
        return ProductDiff(rel, "different", [
            f"differs from the record: science digest {sci_h[:12]} ({from_h}) vs {sci_t[:12]} ({from_t}); "
            f"{there.name}'s file {there.path} is not here: bring it to see which arrays differ, where and by "
            "how much (and whether within tolerance)", *changed], by="record")
    why = (f"{there.name}'s file {there.path} is not here and " + (
        f"{there.name}'s record has no science digest (made before they were recorded)" if not sci_t
        else f"{here.name}'s record has no science digest"))
    return ProductDiff(rel, "unchecked", [f"{why}; the file checksums differ, which headers alone explain: "
                                          f"bring {there.name}'s file to compare the arrays"], by="record")


def compare_product(rel: str, dir_a: Path, dir_b: Path, rec_a: dict[str, str], rec_b: dict[str, str]) -> ProductDiff:
    a = Side("A", dir_a / rel, rec_a.get("sha256", ""), rec_a.get("science_sha256", ""))
    b = Side("B", dir_b / rel, rec_b.get("sha256", ""), rec_b.get("science_sha256", ""))
    try:
        if a.present and b.present:
            return compare_files(rel, a.path, b.path, bool(a.sha256) and a.sha256 == b.sha256)
        return compare_with_record(rel, a, b)
    except (OSError, ValueError, TypeError, KeyError) as e:
        return ProductDiff(rel, "unchecked", [f"could not be read: {e}"])
