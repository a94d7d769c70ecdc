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

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.provenance.compare_products import ATOL, PRODUCT_VERDICTS, RTOL, ProductDiff, compare_product
from dream_hpc.provenance.digest import is_preview
from dream_hpc.provenance.read import load, products
from dream_hpc.provenance.write import flatten_params

# Config keys that name places on one machine; what they point to is compared by its hash instead.
PATH_KEYS = ("catalog.path", "catalog.photometry", "references.crds_path", "references.mirage_data", "pointings.apt.xml",
             "pointings.apt.pointing")
# Step/Mirage parameters that say where files go in this run, not how pixels are made.
IGNORED_PARAM_KEYS = ("output_dir", "input_dir", "directory")
MAX_LISTED = 10

# compare's exit codes, one per verdict (reproduce returns them too; 2 stays "refused / bad input").
EXIT_REPRODUCED, EXIT_NOT_REPRODUCED, EXIT_INCOMPLETE = 0, 1, 3


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
