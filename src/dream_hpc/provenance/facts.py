"""Run-level facts for provenance: config, lock, software, container, references, MPI, Slurm, git.

`collect(cfg, run)` returns the dict the engine journals as the `run_start` record (rank 0, once
per attempt); consolidation turns it into `/run` and `/runs/<attempt>` of provenance.h5. It only
reads: it never imports mpi4py (that would initialise MPI), jwst or Mirage, and it is quick on a
second call because digests of big files (the .sif image, the catalog) are cached by path, size,
mtime and inode.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from dream_hpc import __version__
from dream_hpc.config import SurveyConfig
from dream_hpc.core import versions
from dream_hpc.core.digests import cached_sha256
from dream_hpc.core.journal import now_iso, read_journal
from dream_hpc.core.rundir import RunDir

SCHEMA_VERSION = 1
# Where `dream-hpc reproduce` leaves the facts of a reproduction (source record, allowed drift).
REPRODUCE_FILE = "reproduce.json"
# Files under a CRDS cache that change on every sync without changing any reference or rule.
_CRDS_VOLATILE = ("config",)
# Slurm variables worth keeping (name in the record -> environment variable).
SLURM_VARS = {
    "job_id": "SLURM_JOB_ID", "array_job_id": "SLURM_ARRAY_JOB_ID", "array_task_id": "SLURM_ARRAY_TASK_ID",
    "job_name": "SLURM_JOB_NAME", "nodelist": "SLURM_JOB_NODELIST", "num_nodes": "SLURM_JOB_NUM_NODES",
    "ntasks": "SLURM_NTASKS", "partition": "SLURM_JOB_PARTITION", "cluster": "SLURM_CLUSTER_NAME",
    "account": "SLURM_JOB_ACCOUNT", "submit_host": "SLURM_SUBMIT_HOST",
}


def tree_manifest(root: str | Path, skip_top: tuple[str, ...] = ()) -> dict[str, Any]:
    """A hash over every file's relative path and size under `root` (contents are not read).

    mtimes are left out on purpose: a cache copied to another cluster keeps its contents but
    not its mtimes, and the point of this hash is to recognise the same cache there.
    """
    root = Path(root)
    h = hashlib.sha256()
    n = size = 0
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue  # dangling link: not part of the cache
            rel = os.path.normpath(os.path.join(rel_dir, name))
            entries.append((rel, st.st_size))
    for rel, sz in sorted(entries):
        h.update(f"{rel}\0{sz}\n".encode())
        n += 1
        size += sz
    return {"manifest_sha256": h.hexdigest(), "manifest_kind": "listing", "n_files": n, "bytes": size}


def _kit_manifest(root: Path) -> dict[str, Any] | None:
    """The reference kit's manifest.json (inside `root` or in the kit directory above it).

    Hashed over this cache's own entries (path, sha256, size of each file under `root`), so the
    CRDS cache and MIRAGE_DATA of one kit each get an identity that changes only with their files.
    """
    for kit in (root, root.parent):
        candidate = kit / "manifest.json"
        if not candidate.is_file():
            continue
        try:
            files = json.loads(candidate.read_text()).get("files")
        except (OSError, ValueError, AttributeError):
            files = None
        if not isinstance(files, dict):
            continue
        prefix = "" if kit == root else f"{root.name}/"
        mine = {k.removeprefix(prefix): {f: v.get(f) for f in ("sha256", "size")} for k, v in sorted(files.items())
                if k.startswith(prefix) and isinstance(v, dict)}
        if not mine:
            continue
        digest = hashlib.sha256(json.dumps(mine, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return {"manifest_sha256": digest, "manifest_kind": f"kit:{candidate.name}" + (f"#{root.name}" if prefix else ""),
                "n_files": len(mine), "bytes": sum(int(v.get("size") or 0) for v in mine.values())}
    return None


def cache_manifest(root: str | Path, section: str) -> dict[str, Any]:
    """Identity of a reference cache: the kit manifest's hash if it has one, else a file listing hash."""
    root = Path(root)
    info: dict[str, Any] = {"path": str(root)}
    if not root.is_dir():
        return info | {"manifest_sha256": "", "manifest_kind": "missing"}
    kit = _kit_manifest(root)
    if kit:
        return info | kit
    skip = _CRDS_VOLATILE if section == "crds_cache" else ()
    return info | tree_manifest(root, skip_top=skip)


# --- software -----------------------------------------------------------------------------
def git_commit() -> dict[str, Any]:
    """dream-hpc's commit: from the environment or the image label, else from the source checkout."""
    env = os.environ.get("DREAM_HPC_GIT_COMMIT")
    if env:
        return {"git_commit": env, "git_dirty": False, "git_source": "env"}
    labels = Path("/.singularity.d/labels.json")
    if labels.is_file():
        try:
            data = json.loads(labels.read_text())
        except (OSError, ValueError):
            data = {}
        for key in ("dream-hpc.git_commit", "org.opencontainers.image.revision"):
            if data.get(key):
                return {"git_commit": data[key], "git_dirty": False, "git_source": "image label"}
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "", "git_dirty": False, "git_source": "unknown"}
    return {"git_commit": commit, "git_dirty": bool(dirty), "git_source": "checkout"}


# Written into every image by containers/recipe.sh (Apptainer and debootstrap builders alike).
IMAGE_IDENTITY = Path("/opt/dream-hpc/meta/image.json")
# Its fields a run records: what the image was built from, by which builder on which base.
IMAGE_FIELDS = ("image_id", "builder", "base", "os", "lock_sha256", "recipe_sha256", "definition_sha256",
                "source_sha256", "refs_sha256")


def image_identity() -> dict[str, Any]:
    """The identity the recipe wrote into this image (empty outside an image, or if unreadable)."""
    path = Path(os.environ.get("DREAM_HPC_IMAGE_IDENTITY") or IMAGE_IDENTITY)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(data[k]) for k in IMAGE_FIELDS if k in data} if isinstance(data, dict) else {}


def container() -> dict[str, Any]:
    """The image this process runs in: file path and sha256, plus the identity recorded inside it.

    Apptainer names its .sif in APPTAINER_CONTAINER; containers/image-chroot.sh (the image run
    from its SquashFS with chroot) names it in DREAM_HPC_IMAGE. Empty outside any image.
    """
    path = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    runtime = "apptainer"
    if not path and os.environ.get("DREAM_HPC_IMAGE"):
        path, runtime = os.environ["DREAM_HPC_IMAGE"], os.environ.get("DREAM_HPC_IMAGE_RUNTIME") or "chroot"
    identity = image_identity()
    if not path and not identity:
        return {}
    info: dict[str, Any] = {"runtime": runtime if path else "unknown", "path": path or "", "sha256": ""}
    if path and Path(path).is_file():  # a sandbox directory has no single digest
        info["sha256"] = cached_sha256(path)
    return info | identity


def slurm() -> dict[str, str]:
    return {key: os.environ[var] for key, var in SLURM_VARS.items() if os.environ.get(var)}


def mpi_size_from_env() -> int:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 1


def attempt_number(run: RunDir) -> int:
    """1 + the number of attempts already journaled in `run` (rank 0 computes it and tells the others)."""
    return 1 + sum(1 for f in read_journal(run.journal) for r in f.records if r.get("kind") == "run_start")


# --- the record ---------------------------------------------------------------------------
def _file_fact(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"path": str(path), "sha256": "", "bytes": 0}
    return {"path": str(path), "sha256": cached_sha256(path), "bytes": path.stat().st_size}


def collect(cfg: SurveyConfig, run: RunDir, mpi_size: int | None = None,
            hosts: list[str] | None = None) -> dict[str, Any]:
    """Everything about this run attempt that is not per unit: the `run_start` record's data."""
    lock = versions.lock_path()
    lock_text = lock.read_text() if lock.is_file() else ""
    packages = versions.installed()
    refs = cfg.references
    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "attempt": attempt_number(run),
        "start": now_iso(),
        "argv": list(sys.argv),
        "config_path": str(cfg.source or ""),
        "config_sha256": cfg.sha256,
        "config_text": cfg.text,
        "lock_path": str(lock),
        "lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest() if lock_text else "",
        "lock_text": lock_text,
        "packages": dict(sorted(packages.items())),
        "versions": {name: packages.get(name, "") for name in versions.KEY_PACKAGES},
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "container": container(),
        "crds": {"context": refs.context} | cache_manifest(cfg.resolve(refs.crds_path), "crds_cache"),
        "mirage_data": cache_manifest(cfg.resolve(refs.mirage_data), "mirage_data"),
        "catalog": _file_fact(cfg.resolve(cfg.catalog.path)),
        # DREaM's second table, and the prepared (footprint-cut, sorted) catalog every unit read from
        "catalog_photometry": _file_fact(cfg.resolve(cfg.catalog.photometry)) if cfg.catalog.photometry else {},
        "catalog_prepared": _file_fact(run.root / "catalog" / "prepared.h5"),
        "catalog_cosmology": cfg.catalog.cosmology,
        "mpi_size": mpi_size if mpi_size is not None else mpi_size_from_env(),
        "hosts": sorted(set(hosts)) if hosts else [socket.gethostname()],
        "slurm": slurm(),
        "dream_hpc": {"version": __version__} | git_commit(),
    }
    reproduce = run.root / REPRODUCE_FILE
    if reproduce.is_file():  # written by `dream-hpc reproduce`: which record, and any drift allowed
        info["reproduce"] = json.loads(reproduce.read_text())
    return info


def software_drift(recorded: dict[str, str], installed: dict[str, str] | None = None) -> list[str]:
    """One line per package whose installed version differs from `recorded` (name -> version)."""
    have = versions.installed() if installed is None else installed
    lines = []
    for name in sorted(set(recorded) | set(have)):
        want, got = recorded.get(name), have.get(name)
        if want == got:
            continue
        if want is None:
            lines.append(f"{name}: not in the record, installed {got}")
        elif got is None:
            lines.append(f"{name}: recorded {want}, not installed")
        else:
            lines.append(f"{name}: recorded {want}, installed {got}")
    return lines
