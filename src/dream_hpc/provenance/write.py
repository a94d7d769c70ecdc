"""RUN/provenance.h5: consolidate the journal's read model into HDF5 (one writer, atomic).

Ranks never touch the HDF5 file (PyPI's h5py is not parallel HDF5): they journal durably and
`consolidate` rebuilds the whole file from every journal file of every attempt, writing a
temporary file that is renamed into place, so provenance.h5 is either the previous complete
file or the new complete file. The layout (plain groups, attributes and datasets; units in the
names) is documented in docs/provenance.md. `audit`, `compare` and `reproduce` live in
prov_audit, prov_compare and prov_reproduce, reading in prov_read; their commands are registered here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc import __version__
from dream_hpc.core import faults
from dream_hpc.core.journal import JournalFile, journal_files, now_iso, parse_lines, split_raw
from dream_hpc.core.rundir import RunDir, RunDirError, atomic_path
from dream_hpc.core.runmodel import Model, StageRecord, build, stage_key
from dream_hpc.provenance.digest import SCHEME as DIGEST_SCHEME
from dream_hpc.provenance.read import SCHEMA, ProvenanceError, plain

SCHEMA_VERSION = 1
# run_start keys stored as datasets rather than attributes
_TEXT_DATASETS = {"config_text": "config", "lock_text": "lock"}


# --- a tree of groups/attributes/datasets, written or compared as a whole ------------------
class Tree:
    """What goes into the file: group path -> attrs, dataset path -> (value, attrs)."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {"/": {}}
        self.datasets: dict[str, tuple[Any, dict[str, Any]]] = {}

    def group(self, path: str, **attrs: Any) -> str:
        self.groups.setdefault(path, {}).update(attrs)
        return path

    def dataset(self, path: str, value: Any, **attrs: Any) -> None:
        self.datasets[path] = (value, attrs)

    def write(self, h5: Any) -> None:
        for k, v in self.groups["/"].items():
            h5.attrs[k] = _attr(v)
        for path in sorted(self.groups):  # parents sort before their children
            if path == "/":
                continue
            g = h5.create_group(path)
            for k, v in self.groups[path].items():
                g.attrs[k] = _attr(v)
        for path, (value, attrs) in sorted(self.datasets.items()):
            ds = h5.create_dataset(path, data=_data(value))
            for k, v in attrs.items():
                ds.attrs[k] = _attr(v)

    def flat(self) -> dict[str, Any]:
        """What `flatten` reads back from a file this tree was written to (without writing one)."""
        out: dict[str, Any] = {}
        for path, attrs in self.groups.items():
            for k, v in attrs.items():
                out[f"{path.rstrip('/')}/@{k}" if path == "/" else f"{path}@{k}"] = plain(_attr(v))
        for path, (value, attrs) in self.datasets.items():
            data = np.asarray(_data(value))
            out[path] = plain(data)
            out[f"{path}#dtype"] = str(data.dtype)
            for k, v in attrs.items():
                out[f"{path}@{k}"] = plain(_attr(v))
        return out


def _str_dtype() -> Any:
    import h5py

    return h5py.string_dtype()


def _attr(v: Any) -> Any:
    """A Python value as an HDF5 attribute h5py reads back plainly (None -> "", dict -> JSON text)."""
    if v is None:
        return ""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, list | tuple | set):
        items = sorted(v) if isinstance(v, set) else list(v)
        if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            return np.asarray(items, dtype=np.int64)
        return np.asarray([str(x) for x in items], dtype=_str_dtype())
    if isinstance(v, bool | np.bool_):
        return np.bool_(v)
    if isinstance(v, int):
        return np.int64(v)
    if isinstance(v, float):
        return np.float64(v)
    return str(v)


def _data(v: Any) -> Any:
    if isinstance(v, str):
        return np.asarray(v, dtype=_str_dtype())
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return np.asarray(v, dtype=_str_dtype())
    return v


def table(rows: list[tuple], columns: list[tuple[str, str]]) -> np.ndarray:
    """A compound dataset: columns are (name, 'str' | 'int' | 'float')."""
    kinds = {"str": _str_dtype(), "int": np.int64, "float": np.float64}
    dtype = np.dtype([(name, kinds[kind]) for name, kind in columns])
    return np.array([tuple(r) for r in rows], dtype=dtype)


def _pairs(mapping: dict[str, Any], key: str, value: str) -> np.ndarray:
    return table([(str(k), str(v)) for k, v in sorted(mapping.items())], [(key, "str"), (value, "str")])


def flatten_params(params: Any, prefix: str = "") -> list[tuple[str, str]]:
    """{'jump': {'rejection_threshold': 4.0}} -> [('jump.rejection_threshold', '4.0')] (values as JSON)."""
    if isinstance(params, dict) and params:
        out = []
        for k in sorted(params, key=str):
            out += flatten_params(params[k], f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, json.dumps(params, sort_keys=True, default=str))] if prefix else []


def _flat_info(info: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """run_start data as attributes: nested mappings become prefix_key; text/tables are datasets."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if not prefix and (key in _TEXT_DATASETS or key == "packages"):
            continue
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict) and all(not isinstance(v, dict | list) or _scalar_list(v) for v in value.values()):
            out |= _flat_info(value, name)
        elif isinstance(value, dict | list) and not _scalar_list(value):
            out[name] = json.dumps(value, sort_keys=True, default=str)
        else:
            out[name] = value
    return out


def _scalar_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str | int | float | bool) for x in v)


# --- model -> tree ----------------------------------------------------------------------------
_STAGE_ATTRS = ("status", "attempt", "rank", "host", "start", "end", "wall_s", "cpu_s", "peak_rss_mb", "step",
                "error", "record_hash")


def association_text(st: StageRecord, attachments: dict[str, str]) -> tuple[str, str]:
    """(association JSON text, its path) for a mosaic; the file's own text when the record names a file.

    The engine journals the association as a path whose sha256 is among the mosaic's inputs; its
    text is kept only if it hashes to that recorded value, so it is as tamper-evident as the record.
    """
    if isinstance(st.asn, str) and st.asn:
        recorded = st.inputs.get(st.asn) or st.outputs.get(st.asn)
        text = attachments.get(st.asn)
        if recorded and text is not None and hashlib.sha256(text.encode()).hexdigest() == recorded:
            return text, st.asn
        return json.dumps(st.asn), st.asn
    return json.dumps(st.asn, sort_keys=True), ""


def read_attachments(run: RunDir, model: Model) -> dict[str, str]:
    """Texts of the files the records name as associations (read at consolidation)."""
    out = {}
    for st in model.mosaics.values():
        if isinstance(st.asn, str) and st.asn:
            with contextlib.suppress(OSError, UnicodeDecodeError, RunDirError):
                out[st.asn] = run.inside(st.asn).read_bytes().decode()
    return out


def _stage(t: Tree, path: str, st: StageRecord, attachments: dict[str, str] | None = None) -> None:
    # JSON texts are attributes: thousands of units means tens of thousands of objects, and an
    # HDF5 dataset costs several times what an attribute does to create and to store.
    attrs = {k: getattr(st, k) for k in _STAGE_ATTRS}
    attrs["params"] = json.dumps(st.params, sort_keys=True, default=str)
    attrs["extra"] = json.dumps(st.extra, sort_keys=True, default=str)
    if st.asn is not None:
        attrs["asn"], attrs["asn_path"] = association_text(st, attachments or {})
    t.group(path, **attrs)
    t.dataset(f"{path}/inputs", _pairs(st.inputs, "path", "sha256"))
    t.dataset(f"{path}/outputs", _pairs(st.outputs, "path", "sha256"))
    if st.science_sha256:  # absent in records made before science digests (their files stay auditable)
        t.dataset(f"{path}/science_sha256", _pairs(st.science_sha256, "path", "sha256"), scheme=DIGEST_SCHEME)
    refs = [(rt, name, st.ref_sha256.get(name, "")) for rt, name in sorted(st.refs.items())]
    t.dataset(f"{path}/refs", table(refs, [("reftype", "str"), ("name", "str"), ("sha256", "str")]))
    t.dataset(f"{path}/params_table", table(flatten_params(st.params), [("name", "str"), ("value", "str")]),
              value_format="JSON")
    seeds = [(k, int(v)) for k, v in sorted(st.seeds.items()) if isinstance(v, int)]
    t.dataset(f"{path}/seeds", table(seeds, [("purpose", "str"), ("seed", "int")]))
    times = [(k, float(v)) for k, v in st.step_times.items() if isinstance(v, int | float)]
    t.dataset(f"{path}/step_times", table(times, [("step", "str"), ("wall_s", "float")]), units="s")


def tree(model: Model, attachments: dict[str, str] | None = None) -> Tree:
    """Everything provenance.h5 holds, derived from the journal model alone."""
    t = Tree()
    t.group("/", schema=SCHEMA, schema_version=SCHEMA_VERSION, journal_digest=model.digest)
    first = model.attempts[0].info if model.attempts else {}
    last = model.attempts[-1] if model.attempts else None
    counts = {s: sum(1 for u in model.units.values() if u.status == s)
              for s in ("done", "failed", "timeout", "incomplete")}
    t.group("/run", **(_flat_info(first) | {
        "n_attempts": len(model.attempts), "start": model.attempts[0].start if model.attempts else "",
        "end": last.end if last else "", "status": last.status if last else "incomplete",
        "hosts_seen": sorted({h for a in model.attempts for h in a.hosts}),
    } | {f"n_units_{k}": v for k, v in counts.items()}))
    _info_datasets(t, "/run", first)
    t.group("/runs")
    for att in model.attempts:
        path = t.group(f"/runs/{att.number:03d}", **(_flat_info(att.info) | {
            "number": att.number, "start": att.start, "end": att.end, "status": att.status,
            "n_done": att.n_done, "n_failed": att.n_failed, "journal_files": att.files,
            "hosts_seen": sorted(att.hosts), "ranks_seen": sorted(att.ranks)}))
        _info_datasets(t, path, att.info)
    t.group("/units", n_units=len(model.units), **{f"n_{k}": v for k, v in counts.items()})
    for uid, unit in model.units.items():
        order = sorted(unit.stages, key=stage_key)
        t.group(f"/units/{uid}", status=unit.status, end=unit.end, wall_s=unit.wall_s,
                peak_rss_mb=unit.peak_rss_mb, stages=order)
        t.dataset(f"/units/{uid}/outputs", _pairs(unit.outputs, "path", "sha256"))
        t.dataset(f"/units/{uid}/events", table(unit.events, [
            ("time", "str"), ("attempt", "int"), ("rank", "int"), ("host", "str"), ("kind", "str"),
            ("stage", "str"), ("step", "str"), ("detail", "str")]))
        for name in order:
            _stage(t, f"/units/{uid}/{name}", unit.stages[name])
    t.group("/mosaic", n_mosaics=len(model.mosaics))
    for name, st in model.mosaics.items():
        _stage(t, f"/mosaic/{name}", st, attachments)
    t.group("/journal", digest=model.digest, n_files=len(model.files))
    for f in model.files:
        path = t.group(f"/journal/{f.name.removesuffix('.jsonl')}", file=f.name, attempt=f.attempt,
                       rank=f.rank, n_records=len(f.lines), head=f.head, torn_tail_bytes=f.torn_tail_bytes,
                       chain_ok=not f.problems)
        t.dataset(f"{path}/records", list(f.lines), format="canonical JSON, one journal record per element")
        t.dataset(f"{path}/hashes", list(f.hashes))
        if f.problems:
            t.dataset(f"{path}/problems", [str(p) for p in f.problems])
    return t


def _info_datasets(t: Tree, path: str, info: dict[str, Any]) -> None:
    for key, name in _TEXT_DATASETS.items():
        t.dataset(f"{path}/{name}", str(info.get(key) or ""))
    packages = info.get("packages") if isinstance(info.get("packages"), dict) else {}
    t.dataset(f"{path}/packages", _pairs(packages, "name", "version"))


# --- consolidation --------------------------------------------------------------------------
def _disk_files(run: RunDir) -> list[JournalFile]:
    files = []
    for path in journal_files(run.journal):
        lines, torn = split_raw(path.read_bytes())
        files.append(parse_lines(path.name, lines, torn))
    return files


def _kept_files(h5path: Path, present: set[str]) -> list[JournalFile]:
    """Journal files recorded in an earlier provenance.h5 but gone from disk: keep their records."""
    if not h5path.is_file():
        return []
    import h5py

    kept = []
    try:
        with h5py.File(h5path, "r") as h5:
            for g in h5.get("journal", {}).values():
                name = str(g.attrs.get("file", ""))
                if name and name not in present and "records" in g:
                    lines = [s for s in g["records"].asstr()[()]]
                    kept.append(parse_lines(name, lines, int(g.attrs.get("torn_tail_bytes", 0))))
    except OSError:
        return []  # unreadable old file: the journal on disk is all there is
    return kept


def consolidate(run: RunDir | str | Path) -> Path:
    """Build RUN/provenance.h5 from every journal file (all ranks, all attempts); atomic."""
    import h5py

    run = run if isinstance(run, RunDir) else RunDir(Path(run).resolve())
    if not run.journal.is_dir():
        raise ProvenanceError(f"{run.journal}: no journal directory (is {run.root} a dream-hpc run directory?)")
    files = _disk_files(run)
    files += _kept_files(run.provenance, {f.name for f in files})
    model = build(files)
    with atomic_path(run.provenance) as tmp, h5py.File(tmp, "w") as h5:
        tree(model, read_attachments(run, model)).write(h5)
        faults.at("provenance", run.root)  # test hook (off unless DREAM_HPC_TEST_FAULT names it)
        h5.attrs["created"] = now_iso()
        h5.attrs["created_by"] = f"dream-hpc {__version__}"
    return run.provenance


# --- what audit expects ---------------------------------------------------------------------
def expected_flat(model: Model, attachments: dict[str, str] | None = None) -> dict[str, Any]:
    """What `flatten` should give for the file consolidation writes from `model`."""
    return tree(model, attachments).flat()


def stored_attachments(flat: dict[str, Any]) -> dict[str, str]:
    """Association texts as stored (tree() keeps each only if it still hashes to the record)."""
    return {str(flat[k]): str(flat.get(k.removesuffix("_path"), "")) for k in flat
            if k.startswith("/mosaic/") and k.endswith("@asn_path") and flat[k]}
