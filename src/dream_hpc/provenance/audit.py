"""`dream-hpc audit`: a readable report of a run and a verification of its record and products.

Checks, each problem named on its own line:
  chain broken  a journal record (in provenance.h5 or on disk) was edited, deleted or reordered;
  edited        provenance.h5 says something its own journal records do not (it was edited);
  differs/stale the journal files on disk and the copy in provenance.h5 disagree;
  missing       a recorded product is gone;
  modified      a product's sha256 on disk is not the recorded one;
  inconsistent  a stage used an input other than what its producer recorded, attempts ran
                different software or configs, or a recorded path points outside the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.journal import JournalFile, parse_lines, split_raw
from dream_hpc.core.rundir import RunDir, RunDirError
from dream_hpc.core.runmodel import build, stage_key
from dream_hpc.provenance.read import (
    flatten,
    open_h5,
    products,
    resolve,
    stored_files,
    view_from_flat,
)
from dream_hpc.provenance.write import expected_flat, stored_attachments

MAX_LINES_PER_KIND = 50  # beyond this, "... and N more" (a run with every product deleted stays readable)
INTERMEDIATE_SUFFIXES = ("_uncal.fits", "_rate.fits", "_rateints.fits")


@dataclass
class AuditResult:
    view: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_products: int = 0
    n_products_ok: int = 0


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else "-"


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 100 else text[:97] + "..."


def _difference(actual: Any, expected: Any) -> str:
    """Where a stored value departs from what the journal records give: the first differing row."""
    if isinstance(actual, list) and isinstance(expected, list):
        for i, (a, e) in enumerate(zip(actual, expected, strict=False)):
            if a != e:
                return f" row {i} is {_show(a)} but the journal records say {_show(e)}"
        return f" has {len(actual)} rows but the journal records give {len(expected)}"
    return f" is {_show(actual)} but the journal records say {_show(expected)}"


# --- the record itself ------------------------------------------------------------------------
def check_record(actual: dict[str, Any], stored: list[JournalFile]) -> list[str]:
    """Re-verify the hash chains stored in the HDF5 and that every group/attribute/dataset matches them."""
    problems = []
    for f in stored:
        problems += [f"chain broken: provenance.h5 /journal/{f.name.removesuffix('.jsonl')}: line {p.line}: "
                     f"{p.problem}" for p in f.problems]
    expected = expected_flat(build(stored), stored_attachments(actual))
    broken = {f"/journal/{f.name.removesuffix('.jsonl')}" for f in stored if f.problems}
    for key in sorted(set(actual) | set(expected)):
        path, _, attr = key.partition("@")
        base = path.removesuffix("#dtype")
        if base.rsplit("/", 1)[0] in broken or base in broken:
            continue  # consequences of a broken chain, reported above
        what = f"{base} attribute {attr}" if attr else base
        if key not in actual:
            if not key.endswith("#dtype"):
                problems.append(f"edited: provenance.h5 {what} is missing but the journal records have it")
        elif key not in expected:
            if not key.endswith("#dtype"):
                problems.append(f"edited: provenance.h5 {what} is not backed by any journal record")
        elif actual[key] != expected[key]:
            problems.append(f"edited: provenance.h5 {what}" + (": its type changed" if key.endswith("#dtype") else
                                                                _difference(actual[key], expected[key])))
    return problems


def check_journal_dir(stored_list: list[JournalFile], run_dir: Path) -> tuple[list[str], list[str]]:
    """The journal files on disk against the copy in provenance.h5 (problems, notes)."""
    journal = run_dir / "journal"
    if not journal.is_dir():
        return [], [f"{journal}: not found; the record was verified from provenance.h5 alone"]
    problems: list[str] = []
    stored = {f.name: f for f in stored_list}
    on_disk = {p.name: p for p in sorted(journal.glob("rank*.jsonl"))}
    for name, f in sorted(stored.items()):
        if name not in on_disk:
            problems.append(f"missing: journal/{name} (recorded in provenance.h5; it was deleted)")
            continue
        lines, torn = split_raw(on_disk[name].read_bytes())
        disk = parse_lines(name, lines, torn)
        problems += [f"chain broken: journal/{name}: line {p.line}: {p.problem}" for p in disk.problems]
        n = min(len(lines), len(f.lines))
        first = next((i for i in range(n) if lines[i] != f.lines[i]), None)
        if first is not None:
            problems.append(f"differs: journal/{name} line {first + 1} is not the record provenance.h5 holds "
                            "(one of them was edited)")
        elif len(lines) < len(f.lines):
            problems.append(f"differs: journal/{name} has {len(lines)} records but provenance.h5 holds "
                            f"{len(f.lines)} (records were deleted from the journal)")
        elif len(lines) > len(f.lines):
            problems.append(f"stale: journal/{name} has {len(lines) - len(f.lines)} record(s) newer than "
                            f"provenance.h5 (rebuild it with `dream-hpc provenance {run_dir}`)")
    for name in sorted(set(on_disk) - set(stored)):
        problems.append(f"stale: journal/{name} is not in provenance.h5 (rebuild it with "
                        f"`dream-hpc provenance {run_dir}`)")
    return problems, []


# --- products and consistency ----------------------------------------------------------------
def _keeps_intermediate(config_text: str) -> bool:
    import yaml

    try:
        data = yaml.safe_load(config_text) or {}
        return bool((data.get("engine") or {}).get("keep_intermediate", True))
    except (yaml.YAMLError, AttributeError):
        return True


def check_products(view: dict[str, Any], result: AuditResult, progress: Callable[[int, int], None]) -> None:
    run = RunDir(Path(view["run_dir"]).resolve())
    keep = _keeps_intermediate(view["config"])
    recorded = products(view)
    result.n_products = len(recorded)
    for i, (rel, info) in enumerate(recorded.items(), 1):
        progress(i, len(recorded))
        try:
            path = run.inside(rel)
        except RunDirError:
            result.problems.append(f"inconsistent: {info['by']} recorded the product path {rel!r}, outside the run")
            continue
        if not path.is_file():
            if not keep and rel.endswith(INTERMEDIATE_SUFFIXES):
                result.notes.append(f"{rel}: removed after use (engine.keep_intermediate is false)")
                result.n_products_ok += 1
            else:
                result.problems.append(f"missing: {rel} (produced by {info['by']}, sha256 {_short(info['sha256'])})")
            continue
        got = sha256_file(path)
        if got != info["sha256"]:
            result.problems.append(f"modified: {rel}: sha256 on disk {_short(got)} is not the recorded "
                                   f"{_short(info['sha256'])} (produced by {info['by']}; changed since)")
        else:
            result.n_products_ok += 1


def check_consistency(view: dict[str, Any]) -> list[str]:
    problems = []
    produced = products(view)
    consumers = [(f"{stage} of {uid}", st) for uid, u in view["units"].items() for stage, st in u["stages"].items()]
    consumers += [(f"image3 of {name}", st) for name, st in view["mosaics"].items()]
    for who, st in consumers:
        if st["attrs"].get("status") != "done":
            continue
        for rel, sha in sorted(st["inputs"].items()):
            src = produced.get(rel)
            if src and src["sha256"] != sha:
                problems.append(f"inconsistent: {rel}: {who} used sha256 {_short(sha)} but {src['by']} "
                                f"recorded {_short(src['sha256'])}")
    for uid, u in view["units"].items():
        for rel, sha in sorted(u["outputs"].items()):
            src = produced.get(rel)
            if src and sha and src["sha256"] != sha:  # "" = not hashed by the writer: nothing to check
                problems.append(f"inconsistent: {rel}: unit {uid} finished with sha256 {_short(sha)} but "
                                f"{src['by']} recorded {_short(src['sha256'])}")
    seen: dict[str, tuple[str, str]] = {}
    for who, st in consumers:
        for name, sha in st["refs"].values():
            if name and sha and seen.setdefault(name, (sha, who))[0] != sha:
                problems.append(f"inconsistent: reference {name} had sha256 {_short(seen[name][0])} for "
                                f"{seen[name][1]} but {_short(sha)} for {who} (the cache changed during the run)")
    attempts = view["attempts"]
    if attempts:
        from dream_hpc.provenance.facts import software_drift

        first = attempts[0]
        for att in attempts[1:]:
            n = att.get("number")
            if att.get("config_sha256") and att.get("config_sha256") != first.get("config_sha256"):
                problems.append(f"inconsistent: attempt {n} ran another config than attempt {first.get('number')} "
                                f"(sha256 {_short(att.get('config_sha256'))} vs {_short(first.get('config_sha256'))})")
            if att["packages"] and first["packages"]:
                drift = software_drift(first["packages"], att["packages"])
                if drift:
                    problems.append(f"inconsistent: attempt {n} ran other software than attempt "
                                    f"{first.get('number')}: " + "; ".join(d.replace("installed", "then") for d in drift[:5])
                                    + (f"; and {len(drift) - 5} more" if len(drift) > 5 else ""))
    return problems


def audit(path: str | Path, verify_products: bool = True,
          progress: Callable[[int, int], None] = lambda i, n: None) -> AuditResult:
    p = resolve(path)
    with open_h5(p) as h5:
        actual = flatten(h5)  # read once: checked against the journal, then the view for the rest
    stored = stored_files(actual)
    record_problems = check_record(actual, stored)
    journal_problems, journal_notes = check_journal_dir(stored, p.parent)
    result = AuditResult(view=view_from_flat(actual, p))
    result.problems += record_problems + journal_problems
    result.notes += journal_notes
    if verify_products:
        check_products(result.view, result, progress)
    result.problems += check_consistency(result.view)
    return result


# --- the report -----------------------------------------------------------------------------
def _sum(values: list[Any]) -> float:
    return sum(v for v in values if isinstance(v, int | float) and not math.isnan(v))


def _max(values: list[Any]) -> float:
    nums = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return max(nums) if nums else float("nan")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def report(result: AuditResult) -> list[str]:
    v, r = result.view, result.view["run"]
    lines = [f"provenance  {v['path']}",
             f"record      journal digest {v['root'].get('journal_digest', '')} "
             f"({len(v['attempts'])} attempt(s))",
             f"run         status {r.get('status', '?')}, {r.get('start', '?')} -> {r.get('end') or 'not ended'}, "
             f"MPI size {r.get('mpi_size', '?')}, hosts {', '.join(map(str, r.get('hosts_seen') or [])) or '?'}"]
    commit = r.get("dream_hpc_git_commit") or "unknown commit"
    dirty = " (uncommitted changes)" if r.get("dream_hpc_git_dirty") is True else ""
    lines.append(f"software    dream-hpc {r.get('dream_hpc_version', '?')} ({commit}{dirty}), "
                 f"jwst {v['packages'].get('jwst', '?')}, mirage {v['packages'].get('mirage', '?')}, "
                 f"python {r.get('python', '?')}, {len(v['packages'])} packages")
    lines.append("container   " + (f"{r.get('container_path')} sha256 {r.get('container_sha256') or '?'}"
                                   if r.get("container_path") else "none (not run inside Apptainer)"))
    lines.append(f"references  CRDS context {r.get('crds_context', '?')}, cache manifest "
                 f"{_short(r.get('crds_manifest_sha256'))}; MIRAGE_DATA manifest "
                 f"{_short(r.get('mirage_data_manifest_sha256'))}; catalog {_short(r.get('catalog_sha256'))}")
    if r.get("slurm_job_id"):
        array = f" (array {r.get('slurm_array_job_id')}_{r.get('slurm_array_task_id')})" if r.get(
            "slurm_array_job_id") else ""
        lines.append(f"slurm       job {r['slurm_job_id']}{array} on {r.get('slurm_nodelist', '?')}, "
                     f"partition {r.get('slurm_partition', '?')}")
    if r.get("reproduce_source"):
        drift = r.get("reproduce_drift") or []
        lines.append(f"reproduces  {r['reproduce_source']}" + (f" WITH DRIFT: {'; '.join(drift)}" if drift else ""))
        lines += [f"  remapped  {line}" for line in r.get("reproduce_remapped") or []]
    units = v["units"]
    by_status: dict[str, int] = {}
    for u in units.values():
        by_status[u["attrs"].get("status", "?")] = by_status.get(u["attrs"].get("status", "?"), 0) + 1
    lines.append(f"units       {len(units)}: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    stages: dict[str, list[dict[str, Any]]] = {}
    for u in units.values():
        for name, st in u["stages"].items():
            stages.setdefault(name, []).append(st["attrs"])
    for name, st in v["mosaics"].items():  # a tiled mosaic's tasks by phase: astrometry, outliers, tile
        tiled = any(k.startswith(f"{name}/") for k in v["mosaics"])
        phase = name.split("/")[1] if "/" in name else "merge" if tiled else "image3"
        stages.setdefault(phase, []).append(st["attrs"] | {"mosaic": name})
    lines.append(f"  {'stage':10s} {'runs':>5s} {'done':>5s} {'wall':>10s} {'cpu':>10s} {'peak RSS max':>13s}")
    all_attrs = []
    for name, attrs in sorted(stages.items(), key=lambda kv: stage_key(kv[0])):
        all_attrs += attrs
        done = sum(1 for a in attrs if a.get("status") == "done")
        lines.append(f"  {name:10s} {len(attrs):5d} {done:5d} {_hours(_sum([a.get('wall_s') for a in attrs])):>10s} "
                     f"{_hours(_sum([a.get('cpu_s') for a in attrs])):>10s} "
                     f"{_max([a.get('peak_rss_mb') for a in attrs]):10.0f} MB")
    lines.append(f"  {'total':10s} {len(all_attrs):5d} {'':5s} {_hours(_sum([a.get('wall_s') for a in all_attrs])):>10s} "
                 f"{_hours(_sum([a.get('cpu_s') for a in all_attrs])):>10s} "
                 f"{_max([a.get('peak_rss_mb') for a in all_attrs]):10.0f} MB")
    for name, st in v["mosaics"].items():
        a = st["attrs"]
        if "/" in name and a.get("status") == "done":
            continue  # a finished tile task: counted in the table above and below, not listed one by one
        lines.append(f"mosaic      {name}: {a.get('status')}, {len(st['inputs'])} inputs, {len(st['outputs'])} outputs"
                     + (f": {a.get('error')}" if a.get("error") else ""))
        tasks = [t for k, t in v["mosaics"].items() if k.startswith(f"{name}/")]
        if tasks:
            ok = sum(t["attrs"].get("status") == "done" for t in tasks)
            lines.append(f"            {name}: tiled, {ok}/{len(tasks)} tasks done (astrometry and outliers per visit, "
                         "tiles), their products checked below")
    for uid, u in units.items():
        for name, st in u["stages"].items():
            a = st["attrs"]
            if a.get("status") in ("failed", "timeout", "incomplete"):
                lines.append(f"{a['status']:11s} {uid}: {name}" + (f" in step {a['step']}" if a.get("step") else "")
                             + (f": {a['error']}" if a.get("error") else ""))
    if result.n_products:
        lines.append(f"products    {result.n_products_ok}/{result.n_products} match their recorded sha256")
    lines += [f"note        {n}" for n in result.notes[:MAX_LINES_PER_KIND]]
    return lines


def capped(problems: list[str]) -> list[str]:
    out, seen = [], {}
    for p in problems:
        kind = p.split(":", 1)[0]
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] <= MAX_LINES_PER_KIND:
            out.append(p)
    out += [f"{kind}: ... and {n - MAX_LINES_PER_KIND} more" for kind, n in seen.items() if n > MAX_LINES_PER_KIND]
    return out
