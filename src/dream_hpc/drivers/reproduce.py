"""`dream-hpc reproduce A.h5 --out RUN2`: re-run a recorded run from its config, refusing on drift.

Before anything runs, the installed software, the CRDS context and cache, MIRAGE_DATA and the
catalog are checked against the record; any difference is named and the run refused unless
`--allow-drift`, in which case the drift is written to RUN2/reproduce.json, journaled by the
engine in `run_start` (runinfo.collect) and so kept in RUN2's provenance. The recorded config is
written to RUN2/config.yaml with every path made absolute for this machine; every path that now
points elsewhere than the record says (the kit, MIRAGE_DATA, the catalog carried to another
cluster) is printed and kept in reproduce.json too, with why. The engine runs it (under MPI too),
and the result is compared with the record (compare's verdict and exit code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig, parse_config
from dream_hpc.core.digests import cached_sha256
from dream_hpc.core.rundir import RunDir, atomic_write_text
from dream_hpc.provenance.compare import PATH_KEYS
from dream_hpc.provenance.facts import REPRODUCE_FILE, cache_manifest, git_commit, software_drift
from dream_hpc.provenance.read import ProvenanceError, load
from dream_hpc.provenance.write import consolidate


def _get(data: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(data.get(key), dict):
            data[key] = {}
        data = data[key]
    data[last] = value


def reproduction_config(text: str, base: Path, overrides: dict[str, str | None]) -> str:
    """The recorded config with every path (given, or defaulted) absolute: resolved against `base`.

    Returned verbatim when that changes nothing, so the new run's config_sha256 equals the record's.
    """
    import yaml

    data = yaml.safe_load(text) or {}
    cfg = parse_config(text, base / "config.yaml")
    changed = False
    for dotted in PATH_KEYS:
        value = _get(cfg.to_dict(), dotted)
        new = overrides.get(dotted)
        new = str(Path(new).expanduser().resolve()) if new else str(cfg.resolve(value)) if value else value
        if new != _get(data, dotted) and (new or _get(data, dotted) is not None):
            _set(data, dotted, new)
            changed = True
    if not changed:
        return text
    return ("# Recorded config, re-run by `dream-hpc reproduce`: paths made absolute for this machine\n"
            + yaml.safe_dump(data, sort_keys=False))


# Path keys -> the run fact (runinfo.collect) that records where the first run found them, resolved.
RECORDED_PATH_FACTS = {"references.crds_path": "crds_path", "references.mirage_data": "mirage_data_path",
                       "catalog.path": "catalog_path"}
OVERRIDE_FLAGS = {"references.crds_path": "--crds-path", "references.mirage_data": "--mirage-data",
                  "catalog.path": "--catalog", "catalog.photometry": "--photometry"}


def remapped_paths(view: dict[str, Any], cfg: SurveyConfig, overrides: dict[str, str | None],
                   base: Path, base_why: str) -> list[str]:
    """One line per config path that now points elsewhere than in the recorded run, and why.

    `KEY: RECORDED -> NOW (why)`; the recorded place is the run's own fact (resolved where it ran)
    when it has one, else the recorded config's value resolved against the recorded config's directory.
    """
    recorded_cfg = parse_config(view["config"], Path(str(view["run"].get("config_path") or "config.yaml")))
    lines = []
    for dotted in PATH_KEYS:
        value = _get(recorded_cfg.to_dict(), dotted)
        now_value = _get(cfg.to_dict(), dotted)
        if not value and not now_value:
            continue
        recorded = str(view["run"].get(RECORDED_PATH_FACTS.get(dotted, ""), "") or "") or (
            str(recorded_cfg.resolve(value)) if value else "(not set)")
        now = str(cfg.resolve(now_value)) if now_value else "(not set)"
        if recorded == now:
            continue
        if overrides.get(dotted):
            why = f"{OVERRIDE_FLAGS[dotted]} {overrides[dotted]}"
        elif value and not Path(str(value)).expanduser().is_absolute():
            why = f"relative '{value}' in the recorded config, resolved against {base} ({base_why})"
        else:
            why = "the config's default, resolved on this machine"
        there = "" if recorded == "(not set)" else (
            "; the recorded path exists here too" if Path(recorded).exists() else "; the recorded path is not here")
        lines.append(f"{dotted}: {recorded} -> {now} ({why}{there})")
    return lines


def drift(view: dict[str, Any], cfg: SurveyConfig) -> list[str]:
    """Every way this machine differs from the record in what decides the pixels (one line each)."""
    r = view["run"]
    lines = [f"software: {d}" for d in software_drift(view["packages"])]
    import platform

    if r.get("python") and r["python"] != platform.python_version():
        lines.append(f"software: python recorded {r['python']}, running {platform.python_version()}")
    commit = git_commit().get("git_commit")
    if r.get("dream_hpc_git_commit") and commit and commit != r["dream_hpc_git_commit"]:
        lines.append(f"software: dream-hpc commit recorded {r['dream_hpc_git_commit'][:12]}, running {commit[:12]}")
    if r.get("crds_context") and r["crds_context"] != cfg.references.context:
        lines.append(f"references: CRDS context recorded {r['crds_context']}, config says {cfg.references.context}")
    for key, path, section, what in (
            ("crds_manifest_sha256", cfg.references.crds_path, "crds_cache", "CRDS cache"),
            ("mirage_data_manifest_sha256", cfg.references.mirage_data, "mirage_data", "MIRAGE_DATA")):
        now = cache_manifest(cfg.resolve(path), section)
        if r.get(key) and r[key] != now.get("manifest_sha256"):
            state = "missing" if now.get("manifest_kind") == "missing" else f"manifest {now['manifest_sha256'][:12]}"
            lines.append(f"references: {what} {cfg.resolve(path)} is {state}, recorded manifest {r[key][:12]}")
    catalog = cfg.resolve(cfg.catalog.path)
    if r.get("catalog_sha256"):
        now = cached_sha256(catalog) if catalog.is_file() else "missing"
        if now != r["catalog_sha256"]:
            lines.append(f"inputs: catalog {catalog} is {now[:12]}, recorded {r['catalog_sha256'][:12]}")
    return lines


def prepare_reproduction(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """Check drift and write RUN2/config.yaml and RUN2/reproduce.json; returns (config path, drift)."""
    from dream_hpc.core.errors import UserError

    view = load(args.record)
    if not view["config"]:
        raise UserError(f"{view['path']}: holds no config (the run never journaled its start); nothing to reproduce")
    recorded_dir = Path(str(view["run"].get("config_path") or ".")).parent
    if args.base:
        base, base_why = Path(args.base).resolve(), "--base"
    elif recorded_dir.is_dir():
        base, base_why = recorded_dir, "the recorded config's directory"
    else:
        base, base_why = Path.cwd(), f"the current directory: the recorded config's directory {recorded_dir} is not here"
    overrides = {"references.crds_path": args.crds_path, "references.mirage_data": args.mirage_data,
                 "catalog.path": args.catalog, "catalog.photometry": getattr(args, "photometry", None)}
    text = reproduction_config(view["config"], base, overrides)
    run = RunDir(Path(args.out).resolve())
    cfg = parse_config(text, run.config)
    remapped = remapped_paths(view, cfg, overrides, base, base_why)
    for line in remapped:
        print(f"reproduce: remapped {line}")
    if not remapped:
        print("reproduce: no path remapped (every path is where the record says)")
    lines = drift(view, cfg)
    for line in lines:
        print(f"drift: {line}", file=sys.stderr)
    if lines and not args.allow_drift:
        raise UserError(f"{len(lines)} difference(s) from the record {view['path']} ({lines[0]}"
                        + (f"; and {len(lines) - 1} more above" if len(lines) > 1 else "") + "): install the "
                        "recorded software (`make venv` from the recorded lock), point --crds-path/--mirage-data/"
                        "--catalog at the recorded data, or pass --allow-drift to run anyway with the drift recorded")
    if args.check_only:
        return run.config, lines
    run = RunDir.create(run.root)
    if run.config.is_file() and run.config.read_text() != text:
        raise UserError(f"{run.config}: exists with another config (use a new --out for the reproduction)")
    atomic_write_text(run.config, text)
    atomic_write_text(run.root / REPRODUCE_FILE, json.dumps({
        "source": str(view["path"]), "source_journal_digest": view["root"].get("journal_digest", ""),
        "source_config_sha256": view["run"].get("config_sha256", ""), "allowed_drift": bool(lines),
        "drift": lines, "remapped": remapped, "base": str(base), "base_why": base_why}, indent=1) + "\n")
    return run.config, lines


def run_reproduce(args: argparse.Namespace) -> int:
    from dream_hpc.core.errors import UserError
    from dream_hpc.engine import mpi

    comm = mpi.world()
    error, config, lines = None, None, []
    if comm.rank == 0:
        try:
            config, lines = prepare_reproduction(args)
        except (UserError, ProvenanceError, ValueError) as e:  # ConfigError is a ValueError
            error = str(e)
    error = comm.bcast(error)  # other ranks must not start the engine (nor wait forever) after a refusal
    config = comm.bcast(str(config) if config else None)
    if error:
        if comm.rank == 0:
            raise UserError(error)
        return 2
    if args.check_only:
        if comm.rank == 0:
            print("reproduce: no drift from the record" if not lines else
                  f"reproduce: {len(lines)} difference(s) from the record (allowed by --allow-drift)")
        return 0
    from dream_hpc.config import load_config
    from dream_hpc.engine.execute import execute

    rc = execute(load_config(config), args.out).exit_code
    if comm.rank != 0:
        return rc
    record = consolidate(args.out)
    from dream_hpc.provenance.compare import compare, report

    print(f"reproduce: record {record}; comparing with {args.record}")
    cmp = compare(args.record, record)
    print("\n".join(report(cmp)))
    return rc or cmp.exit_code
