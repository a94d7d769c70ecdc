"""`dream-hpc compare A B`: did run B reproduce run A? Software, references, parameters, seeds, pixels.

Products are compared by their science arrays (per product type, see SCIENCE_EXTENSIONS), never
by file bytes: headers carry write dates, file names and software versions that legitimately
differ. Compare decides from what it has. Where both products' files are present, each is
bit-identical, equal within the jwst regression tolerance (rtol 1e-5, atol 1e-7; integer arrays
such as DQ must match exactly), or different (which extension, how many pixels, max abs/rel
difference and where). Where one run's file is absent (the record carried alone to another
cluster), the product present is checked against the other run's recorded science digest
(prov_digest): equal is a bitwise reproduction; different says exactly that, and that the other
file is needed to see how. What cannot be checked is INCOMPLETE, never counted as a difference.
Ignored fields are listed in docs/provenance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.prov_digest import SCIENCE_EXTENSIONS, is_preview, science_digest, strip_json, suffix
from dream_hpc.prov_read import ProvenanceError, load, products
from dream_hpc.provenance import flatten_params
from dream_hpc.rundir import sha256_file

RTOL, ATOL = 1e-5, 1e-7  # jwst's regression-test tolerance
# Config keys that name places on one machine; what they point to is compared by its hash instead.
PATH_KEYS = ("catalog.path", "references.crds_path", "references.mirage_data", "pointings.apt.xml",
             "pointings.apt.pointing")
# Step/Mirage parameters that say where files go in this run, not how pixels are made.
IGNORED_PARAM_KEYS = ("output_dir", "input_dir", "directory")
MAX_LISTED = 10
# Product verdicts. `missing`: A recorded it, B did not produce it (a difference in outcome).
# `unchecked`: nothing to check it with (a file absent and no usable digest, or unreadable): never a difference.
PRODUCT_VERDICTS = ("identical", "within tolerance", "different", "missing", "unchecked")
# compare's exit codes, one per verdict (reproduce returns them too; 2 stays "refused / bad input").
EXIT_REPRODUCED, EXIT_NOT_REPRODUCED, EXIT_INCOMPLETE = 0, 1, 3


@dataclass
class ProductDiff:
    path: str
    verdict: str  # one of PRODUCT_VERDICTS
    details: list[str] = field(default_factory=list)
    by: str = "arrays"  # how it was decided: arrays (both files) | record (a file against the other's record)


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
    def differences(self) -> list[str]:
        """What differs in what decides the pixels, one phrase each (empty: nothing found to differ)."""
        counts = self.counts
        return [w for w, bad in (("parameters differ", self.parameters), ("seeds differ", self.seeds),
                                 ("unit outcomes differ", self.units),
                                 (f"{counts.get('different', 0)} product(s) differ", counts.get("different")),
                                 (f"{counts.get('missing', 0)} product(s) of A not produced by B",
                                  counts.get("missing"))) if bad]

    @property
    def verdict(self) -> str:
        """REPRODUCED | REPRODUCED within tolerance | NOT REPRODUCED | INCOMPLETE."""
        if self.differences:
            return "NOT REPRODUCED"
        if not self.products or self.counts.get("unchecked"):
            return "INCOMPLETE"
        return "REPRODUCED within tolerance" if self.counts.get("within tolerance") else "REPRODUCED"

    @property
    def reproduced(self) -> bool:
        """Same parameters and seeds gave the same pixels (software/reference drift only noted)."""
        return self.verdict.startswith("REPRODUCED")

    @property
    def exit_code(self) -> int:
        return {"NOT REPRODUCED": EXIT_NOT_REPRODUCED, "INCOMPLETE": EXIT_INCOMPLETE}.get(self.verdict,
                                                                                         EXIT_REPRODUCED)


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
        if is_preview(rel):
            continue  # a preview of a product compared below
        if rel not in pb:
            cmp.products.append(ProductDiff(rel, "missing", ["recorded by A only (B did not produce it)"], by="record"))
        elif rel not in pa:
            cmp.notes.append(f"{rel}: produced by B only")
        else:
            cmp.products.append(compare_product(rel, Path(va["run_dir"]), Path(vb["run_dir"]), pa[rel], pb[rel]))
    absent = [side for side, v, p in (("A", va, pa), ("B", vb, pb))
              if p and not any((Path(v["run_dir"]) / rel).is_file() for rel in p)]
    for side in absent:
        cmp.notes.append(f"none of {side}'s product files is here ({side} is its record alone): its products are "
                         "checked by their recorded science digests")
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
    by_record = sum(1 for p in cmp.products if p.by == "record")
    lines.append(f"products    {len(cmp.products)} compared: " + ", ".join(
        f"{counts.get(k, 0)} {k}" for k in PRODUCT_VERDICTS if counts.get(k))
        + (f" ({by_record} by recorded checksums)" if by_record else "") if cmp.products
        else "products    none recorded in A")
    listed = [p for p in cmp.products if p.verdict != "identical"]
    for p in listed[:MAX_LISTED * 5]:
        lines.append(f"  {p.verdict}: {p.path}")
        lines += [f"      {d}" for d in p.details[:MAX_LISTED]]
    if len(listed) > MAX_LISTED * 5:
        lines.append(f"  ... and {len(listed) - MAX_LISTED * 5} more (--json lists every product)")
    lines += [f"note        {n}" for n in cmp.notes[:MAX_LISTED]]
    lines.append(f"verdict     {verdict_line(cmp)}")
    return lines


def verdict_line(cmp: Comparison) -> str:
    verdict, counts = cmp.verdict, cmp.counts
    if verdict == "NOT REPRODUCED":
        named = [p.path for p in cmp.products if p.verdict in ("different", "missing")]
        where = f" ({', '.join(named[:3])}{', ...' if len(named) > 3 else ''})" if named else ""
        return f"NOT REPRODUCED: {', '.join(cmp.differences)}{where}"
    if verdict == "INCOMPLETE":
        if not cmp.products:
            return "INCOMPLETE: A records no finished products, so nothing could be checked"
        n = counts.get("unchecked", 0)
        return (f"INCOMPLETE: {n} of {len(cmp.products)} product(s) could not be checked (listed above, with why); "
                "nothing checked differs")
    drift = " (despite software/reference differences listed above)" if cmp.software or cmp.references else ""
    by_record = any(p.by == "record" for p in cmp.products)
    how = "by recorded checksums" if all(p.by == "record" for p in cmp.products) else (
        "by arrays and recorded checksums" if by_record else "")
    if verdict == "REPRODUCED within tolerance":
        return (f"REPRODUCED within tolerance: {counts.get('within tolerance', 0)} product(s) equal within rtol "
                f"{RTOL:g}, atol {ATOL:g}, the rest bit-identical{drift}")
    return f"REPRODUCED: every science array bit-identical{' ' + how if how else ''}{drift}"


def run_compare(args: argparse.Namespace) -> int:
    from dream_hpc.cli import UserError

    try:
        cmp = compare(args.a, args.b)
    except ProvenanceError as e:
        raise UserError(str(e)) from None
    print("\n".join(report(cmp)))
    if args.json:
        from dream_hpc.rundir import atomic_write_text

        atomic_write_text(args.json, json.dumps(asdict(cmp) | {"verdict": cmp.verdict, "reproduced": cmp.reproduced,
                                                               "exit_code": cmp.exit_code}, indent=1) + "\n")
    sys.stdout.flush()
    return cmp.exit_code
