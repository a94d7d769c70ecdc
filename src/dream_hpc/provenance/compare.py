"""`dream-hpc compare A B`: did run B reproduce run A? Software, references, parameters, seeds, pixels.

Products are compared by their science arrays (per product type, see SCIENCE_EXTENSIONS), never
by file bytes: headers carry write dates, file names and software versions that legitimately
differ. Each product is bit-identical, equal within the jwst regression tolerance (rtol 1e-5,
atol 1e-7; integer arrays such as DQ must match exactly), or different (which extension, how many
pixels, max abs/rel difference and where). Ignored fields are listed in docs/provenance.md.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.provenance.read import load, products
from dream_hpc.provenance.write import flatten_params

RTOL, ATOL = 1e-5, 1e-7  # jwst's regression-test tolerance
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
# Config keys that name places on one machine; what they point to is compared by its hash instead.
PATH_KEYS = ("catalog.path", "references.crds_path", "references.mirage_data", "pointings.apt.xml",
             "pointings.apt.pointing")
# Step/Mirage parameters that say where files go in this run, not how pixels are made.
IGNORED_PARAM_KEYS = ("output_dir", "input_dir", "directory")
# Keys of JSON products (associations) that carry software versions or pool names, not science.
IGNORED_JSON_KEYS = ("code_version", "version_id", "asn_pool", "asn_id")
# Products that are pictures of other products: not science, and their bytes carry renderer metadata.
PREVIEW_SUFFIXES = (".png", ".jpg", ".pdf", ".svg")
MAX_LISTED = 10


@dataclass
class ProductDiff:
    path: str
    verdict: str  # identical | within tolerance | different | unavailable
    details: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    a: str
    b: str
    software: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    products: list[ProductDiff] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.products:
            out[p.verdict] = out.get(p.verdict, 0) + 1
        return out

    @property
    def reproduced(self) -> bool:
        """Same parameters and seeds gave the same pixels (software/reference drift only noted)."""
        return (bool(self.products) and not self.parameters and not self.seeds and not self.units
                and all(p.verdict in ("identical", "within tolerance") for p in self.products))


# --- arrays -----------------------------------------------------------------------------------
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
    for v in ("unavailable", "different", "within tolerance"):
        if v in verdicts:
            return v
    return "identical"


def _suffix(rel: str) -> str:
    stem = Path(rel).name.split(".", 1)[0]
    return stem.rsplit("_", 1)[-1] if "_" in stem else ""


def compare_fits(pa: Path, pb: Path) -> tuple[str, list[str]]:
    from astropy.io import fits

    # memmap cannot scale BZERO arrays (uint16 uncal, uint32 DQ); one product at a time fits in memory
    with fits.open(pa, memmap=False) as fa, fits.open(pb, memmap=False) as fb:
        names = SCIENCE_EXTENSIONS.get(_suffix(pa.name))
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


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in IGNORED_JSON_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def compare_product(rel: str, dir_a: Path, dir_b: Path, sha_a: str, sha_b: str) -> ProductDiff:
    if sha_a and sha_a == sha_b:
        return ProductDiff(rel, "identical", ["same file checksum"])
    pa, pb = dir_a / rel, dir_b / rel
    missing = [str(p) for p in (pa, pb) if not p.is_file()]
    if missing:
        return ProductDiff(rel, "unavailable", [f"not found: {', '.join(missing)} (arrays cannot be compared)"])
    try:
        if rel.endswith((".fits", ".fits.gz")):
            verdict, details = compare_fits(pa, pb)
        elif rel.endswith(".ecsv"):
            verdict, details = compare_table(pa, pb)
        elif rel.endswith(".json"):
            same = _strip(json.loads(pa.read_text())) == _strip(json.loads(pb.read_text()))
            verdict, details = ("identical", []) if same else ("different", ["JSON content differs"])
        else:
            same = pa.read_bytes() == pb.read_bytes()
            verdict, details = ("identical", []) if same else ("different", ["file content differs"])
    except (OSError, ValueError, TypeError) as e:
        return ProductDiff(rel, "unavailable", [f"could not be read: {e}"])
    return ProductDiff(rel, verdict, details)


# --- records ----------------------------------------------------------------------------------
def _flat_config(text: str) -> dict[str, str]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {"<config>": text}
    return {k: v for k, v in flatten_params(data) if k not in PATH_KEYS}


def comparable_params(table: dict[str, str]) -> dict[str, str]:
    """Flattened parameters without run-specific places: output/input directories are dropped and an
    absolute path (a reference file given to Mirage) counts by its file name."""
    out = {}
    for name, value in table.items():
        if name.rsplit(".", 1)[-1] in IGNORED_PARAM_KEYS:
            continue
        if value.startswith('"/'):
            value = json.dumps(Path(json.loads(value)).name)
        out[name] = value
    return out


def _mapping_diff(a: dict[str, Any], b: dict[str, Any], what: str) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{what}{key}: {a.get(key, 'absent')} (A) vs {b.get(key, 'absent')} (B)")
    return out


def _stage_items(view: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {(uid, stage): st for uid, u in view["units"].items() for stage, st in u["stages"].items()}
    out |= {(f"mosaic {name}", "image3"): st for name, st in view["mosaics"].items()}
    return out


def _ref_files(stages: dict[tuple[str, str], dict[str, Any]]) -> dict[str, set[str]]:
    """Reference file name -> every sha256 recorded for it (more than one: the cache changed mid-run)."""
    out: dict[str, set[str]] = {}
    for st in stages.values():
        for name, sha in st["refs"].values():
            if name:
                out.setdefault(name, set()).add(sha)
    return out


def _shas(shas: set[str]) -> str:
    return "/".join(sorted(s[:12] for s in shas))


def _grouped(diffs: dict[str, list[str]]) -> list[str]:
    """'what: A vs B' -> in how many unit stages, so 3000 units with one changed parameter is one line."""
    return [f"{line} in {len(where)} unit stage(s), e.g. {where[0]}" for line, where in sorted(diffs.items())]


def compare_records(va: dict[str, Any], vb: dict[str, Any], cmp: Comparison) -> None:
    ra, rb = va["run"], vb["run"]
    cmp.software = _mapping_diff(va["packages"], vb["packages"], "")
    ca, cb = ra.get("dream_hpc_git_commit"), rb.get("dream_hpc_git_commit")
    if ca and cb and ca != cb:
        cmp.software.append(f"dream-hpc commit: {ca[:12]} (A) vs {cb[:12]} (B)")
    if ra.get("python") != rb.get("python"):
        cmp.software.append(f"python: {ra.get('python')} (A) vs {rb.get('python')} (B)")
    if ra.get("crds_context") != rb.get("crds_context"):
        cmp.references.append(f"CRDS context: {ra.get('crds_context')} (A) vs {rb.get('crds_context')} (B)")
    stages_a, stages_b = _stage_items(va), _stage_items(vb)
    files_a, files_b = _ref_files(stages_a), _ref_files(stages_b)
    for name in sorted(set(files_a) | set(files_b)):
        if name not in files_b:
            cmp.references.append(f"{name}: used by A only")
        elif name not in files_a:
            cmp.references.append(f"{name}: used by B only")
        elif files_a[name] != files_b[name]:
            cmp.references.append(f"{name}: sha256 {_shas(files_a[name])} (A) vs {_shas(files_b[name])} (B) "
                                  "(same name, different content: a corrupted or edited cache)")
    for key in ("crds_manifest_sha256", "mirage_data_manifest_sha256"):
        if ra.get(key) != rb.get(key):
            cmp.notes.append(f"{key.replace('_manifest_sha256', '')} cache manifest differs "
                             f"({str(ra.get(key))[:12]} vs {str(rb.get(key))[:12]}); references actually used are "
                             "compared file by file above")
    if ra.get("catalog_sha256") != rb.get("catalog_sha256"):
        cmp.inputs.append(f"catalog sha256 {str(ra.get('catalog_sha256'))[:12]} (A) vs "
                          f"{str(rb.get('catalog_sha256'))[:12]} (B)")
    cmp.parameters = _mapping_diff(_flat_config(va["config"]), _flat_config(vb["config"]), "config ")
    params: dict[str, list[str]] = {}
    seeds: dict[str, list[str]] = {}
    refsel: dict[str, list[str]] = {}
    for key in sorted(set(stages_a) & set(stages_b)):
        sa, sb = stages_a[key], stages_b[key]
        where = f"{key[1]} of {key[0]}"
        for line in _mapping_diff(comparable_params(sa["params_table"]), comparable_params(sb["params_table"]),
                                  f"{key[1]} "):
            params.setdefault(line, []).append(where)
        for line in _mapping_diff(sa["seeds"], sb["seeds"], f"{key[1]} seed "):
            seeds.setdefault(line, []).append(where)
        names_a = {rt: n for rt, (n, _) in sa["refs"].items()}
        names_b = {rt: n for rt, (n, _) in sb["refs"].items()}
        for line in _mapping_diff(names_a, names_b, f"{key[1]} reference "):
            refsel.setdefault(line, []).append(where)
    cmp.parameters += _grouped(params)
    cmp.seeds = _grouped(seeds)
    cmp.references += _grouped(refsel)
    for uid in sorted(set(va["units"]) | set(vb["units"])):
        sa = va["units"].get(uid, {}).get("attrs", {}).get("status", "absent")
        sb = vb["units"].get(uid, {}).get("attrs", {}).get("status", "absent")
        if sa != sb:
            cmp.units.append(f"{uid}: {sa} (A) vs {sb} (B)")


def _progress(i: int, n: int, last: list[float]) -> None:
    import time

    if n >= 20 and (time.monotonic() - last[0] > 2 or i == n):
        last[0] = time.monotonic()
        print(f"comparing products: {i}/{n}", file=sys.stderr, flush=True)


def compare(a: str | Path, b: str | Path) -> Comparison:
    va, vb = load(a), load(b)
    cmp = Comparison(str(va["path"]), str(vb["path"]))
    compare_records(va, vb, cmp)
    pa, pb = products(va), products(vb)
    names, last = sorted(set(pa) | set(pb)), [0.0]
    for i, rel in enumerate(names, 1):
        _progress(i, len(names), last)
        if rel.lower().endswith(PREVIEW_SUFFIXES):
            continue  # a preview of a product compared below
        if rel not in pb:
            cmp.products.append(ProductDiff(rel, "unavailable", ["recorded by A only (B did not produce it)"]))
        elif rel not in pa:
            cmp.notes.append(f"{rel}: produced by B only")
        else:
            cmp.products.append(compare_product(rel, Path(va["run_dir"]), Path(vb["run_dir"]),
                                                pa[rel]["sha256"], pb[rel]["sha256"]))
    return cmp


# --- report -----------------------------------------------------------------------------------
def _section(label: str, diffs: list[str], same: str) -> list[str]:
    if not diffs:
        return [f"{label:11s} identical ({same})"]
    lines = [f"{label:11s} DIFFER ({len(diffs)})"]
    lines += [f"  {d}" for d in diffs[:MAX_LISTED]]
    if len(diffs) > MAX_LISTED:
        lines.append(f"  ... and {len(diffs) - MAX_LISTED} more")
    return lines


def report(cmp: Comparison, va_summary: str = "") -> list[str]:
    lines = [f"A           {cmp.a}", f"B           {cmp.b}"]
    lines += _section("software", cmp.software, "every installed package and Python")
    lines += _section("references", cmp.references, "context and every reference file used, by sha256")
    lines += _section("inputs", cmp.inputs, "catalog sha256")
    lines += _section("parameters", cmp.parameters, "config and every final step parameter")
    lines += _section("seeds", cmp.seeds, "every unit's seeds")
    lines += _section("units", cmp.units, "every unit's status")
    counts = cmp.counts
    lines.append(f"products    {len(cmp.products)} compared: " + ", ".join(
        f"{counts.get(k, 0)} {k}" for k in ("identical", "within tolerance", "different", "unavailable")
        if counts.get(k)) if cmp.products else "products    none recorded in A")
    for p in cmp.products:
        if p.verdict != "identical":
            lines.append(f"  {p.verdict}: {p.path}")
            lines += [f"      {d}" for d in p.details[:MAX_LISTED]]
    lines += [f"note        {n}" for n in cmp.notes[:MAX_LISTED]]
    if cmp.reproduced:
        how = "every science array bit-identical" if counts.get("within tolerance", 0) == 0 else (
            f"science arrays equal within rtol {RTOL:g}, atol {ATOL:g}")
        drift = " (despite software/reference differences listed above)" if cmp.software or cmp.references else ""
        lines.append(f"verdict     REPRODUCED: {how}{drift}")
    else:
        why = [w for w, bad in (("parameters differ", cmp.parameters), ("seeds differ", cmp.seeds),
                                ("unit outcomes differ", cmp.units),
                                ("products differ or are missing", any(p.verdict in ("different", "unavailable")
                                                                       for p in cmp.products)),
                                ("no products to compare", not cmp.products)) if bad]
        lines.append(f"verdict     NOT REPRODUCED: {', '.join(why)}")
    return lines
