"""Reading RUN/provenance.h5 back: locate and open it, flatten it to plain Python, the run's view.

Everything goes through `flatten` (every attribute and dataset as plain values), so `audit`
reads a file once and checks that very content against the journal before using it, and
`compare`, `reproduce` and the PROV-JSON export all see one shape (`view_from_flat`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.journal import JournalFile, parse_lines

SCHEMA = "dream-hpc-provenance"
FILENAME = "provenance.h5"
# Root attributes that are facts of the consolidation itself, not of the journal (audit skips them).
VOLATILE_ATTRS = ("created", "created_by")


class ProvenanceError(RuntimeError):
    """provenance.h5 missing, unreadable or not a dream-hpc record (one line, with the fix)."""


def resolve(path: str | Path) -> Path:
    """provenance.h5 from a path to it or to its run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
        if not p.is_file():
            raise ProvenanceError(f"{p}: not found (build it with `dream-hpc provenance {path}`)")
    if not p.is_file():
        raise ProvenanceError(f"{p}: not found (give RUN/provenance.h5 or the run directory)")
    return p


def open_h5(path: str | Path) -> Any:
    import h5py

    p = resolve(path)
    try:
        h5 = h5py.File(p, "r")
    except OSError:
        raise ProvenanceError(f"{p}: not a readable HDF5 file (truncated or not provenance; "
                              "rebuild it with `dream-hpc provenance RUN`)") from None
    if h5.attrs.get("schema") != SCHEMA:
        h5.close()
        raise ProvenanceError(f"{p}: not a dream-hpc provenance file (no schema={SCHEMA} attribute)")
    return h5


def plain(v: Any) -> Any:
    """An h5py value as plain Python (bytes -> str, numpy -> lists and scalars, NaN -> 'NaN')."""
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, np.ndarray):
        if v.dtype.names:
            return [tuple(plain(x) for x in row) for row in v.tolist()]
        return [plain(x) for x in v.tolist()] if v.ndim else plain(v.item())
    if isinstance(v, np.generic):
        return plain(v.item())
    if isinstance(v, tuple | list):
        return [plain(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def flatten(h5: Any) -> dict[str, Any]:
    """Every attribute (path@name) and dataset (path) of an open file, as plain values."""
    out: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        path = "/" + name
        for k, v in obj.attrs.items():
            out[f"{path}@{k}"] = plain(v)
        if hasattr(obj, "dtype"):
            out[path] = plain(obj[()])
            out[f"{path}#dtype"] = str(obj.dtype)

    for k, v in h5.attrs.items():
        if k not in VOLATILE_ATTRS:
            out[f"/@{k}"] = plain(v)
    h5.visititems(visit)
    return out


def stored_files(flat: dict[str, Any]) -> list[JournalFile]:
    """The journal files as stored in a flattened provenance.h5 (raw lines, re-parsed and re-verified)."""
    out = []
    for key, lines in sorted(flat.items()):
        if key.startswith("/journal/") and key.endswith("/records"):
            group = key.removesuffix("/records")
            name = flat.get(f"{group}@file") or group.rsplit("/", 1)[-1] + ".jsonl"
            out.append(parse_lines(str(name), list(lines or []), int(flat.get(f"{group}@torn_tail_bytes", 0))))
    return out


def _stage_view(attrs: dict[str, Any], data: dict[str, Any], path: str) -> dict[str, Any]:
    def rows(name: str) -> list[Any]:
        return data.get(f"{path}/{name}") or []

    return {
        "attrs": {k: v for k, v in attrs.items() if k not in ("params", "extra", "asn", "asn_path")},
        "asn_path": attrs.get("asn_path", ""),
        "params": json.loads(attrs.get("params") or "{}"),
        "extra": json.loads(attrs.get("extra") or "{}"),
        "asn": json.loads(attrs["asn"]) if attrs.get("asn") else None,
        "inputs": dict(rows("inputs")), "outputs": dict(rows("outputs")),
        "science_sha256": dict(rows("science_sha256")),
        "refs": {rt: (name, sha) for rt, name, sha in rows("refs")},
        "params_table": dict(rows("params_table")), "seeds": dict(rows("seeds")),
        "step_times": dict(rows("step_times")),
    }


def view_from_flat(flat: dict[str, Any], path: Path) -> dict[str, Any]:
    """The plain-Python view of a flattened provenance file: run facts, attempts, units, mosaics."""
    attrs: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {}
    for key, value in flat.items():
        if "#" in key:
            continue
        obj, at, name = key.partition("@")
        if at:
            attrs.setdefault(obj or "/", {})[name] = value
        else:
            data[key] = value
    root = attrs.get("/", {})
    view: dict[str, Any] = {
        "path": path, "run_dir": path.parent, "root": root, "run": attrs.get("/run", {}),
        "config": data.get("/run/config") or "", "lock": data.get("/run/lock") or "",
        "packages": dict(data.get("/run/packages") or []), "attempts": [], "units": {}, "mosaics": {},
    }
    for obj in sorted(attrs):
        parts = obj.strip("/").split("/")
        if parts[0] == "runs" and len(parts) == 2:
            view["attempts"].append(attrs[obj] | {"packages": dict(data.get(f"{obj}/packages") or [])})
        elif parts[0] == "units" and len(parts) == 2:
            view["units"][parts[1]] = {"attrs": attrs[obj], "outputs": dict(data.get(f"{obj}/outputs") or []),
                                       "stages": {}}
        elif parts[0] == "units" and len(parts) == 3 and obj not in data:
            view["units"].setdefault(parts[1], {"attrs": {}, "outputs": {}, "stages": {}})["stages"][parts[2]] = (
                _stage_view(attrs[obj], data, obj))
        elif parts[0] == "mosaic" and len(parts) >= 2 and obj not in data and "status" in attrs[obj]:
            # a filter's mosaic (F150W), or a task of a tiled one (F150W/astrometry/o001v001, .../tile/r0c1)
            view["mosaics"]["/".join(parts[1:])] = _stage_view(attrs[obj], data, obj)
    return view


def load(path: str | Path) -> dict[str, Any]:
    """provenance.h5 as plain Python: run facts, attempts, units and stages, mosaics."""
    p = resolve(path)
    with open_h5(p) as h5:
        return view_from_flat(flatten(h5), p)


def products(view: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every product a finished stage or mosaic recorded: relpath -> {sha256, science_sha256, by, kind}.

    science_sha256 is "" in records made before science digests were journaled.
    """
    out: dict[str, dict[str, str]] = {}
    for uid, unit in view["units"].items():
        for stage, st in unit["stages"].items():
            if st["attrs"].get("status") == "done":
                for rel, sha in st["outputs"].items():
                    out[rel] = {"sha256": sha, "science_sha256": st["science_sha256"].get(rel, ""),
                                "by": f"{stage} of {uid}", "kind": stage}
    for name, st in view["mosaics"].items():
        if st["attrs"].get("status") == "done":
            for rel, sha in st["outputs"].items():
                out[rel] = {"sha256": sha, "science_sha256": st["science_sha256"].get(rel, ""),
                            "by": f"image3 of {name}", "kind": "image3"}
    return dict(sorted(out.items()))
