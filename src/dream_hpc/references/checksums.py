"""Reference files checked against their checksum record before any compute.

A truncated or altered reference otherwise fails deep inside a step, once per unit, after each
unit's simulation (the seed notes' "cannot reshape array of size ... into shape (187,2048,2048)").
The record is the strongest one the directory has:

- a reference kit (DIR/crds_cache, DIR/mirage_data beside DIR/manifest.json): the kit manifest's
  sha256 and size of every file;
- a synced CRDS cache: RECORD_NAME in its root, written by `dream-hpc cache verify` at sync time
  (after every file verified), with the sha256 and size of each reference.

A size mismatch is found from `stat` alone; a sha256 is computed once per file version per machine
(core/digests.py keeps big files' digests by path, size, mtime and inode), so a rerun or a second
run on the same node reads nothing again. A file the record does not list is "unverified", not bad.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from dream_hpc.core.digests import PERSISTENT_DIGEST_BYTES, cached_sha256, file_sha256
from dream_hpc.core.rundir import atomic_write_text

RECORD_NAME = "dream-hpc-checksums.json"  # in a CRDS cache root, written by `dream-hpc cache verify`
KIT_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Record:
    """sha256 and size per file (absolute, resolved path), and where they come from."""

    source: Path  # the manifest or record file
    kit: Path | None  # the kit root, when the record is a kit manifest
    files: dict[str, tuple[str, int | None]]


@dataclass(frozen=True)
class Verdict:
    path: Path
    problem: str | None  # None: verifies (or unverified, see `verified`)
    verified: bool  # checked against a record (False: no record lists the file)
    record: Record | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def short(self) -> str:
        """`name (verifies)`, `name (BAD: truncated ...)`, or for a file no record lists, what its
        content shows (FITS structure and checksums, ASDF blocks)."""
        if not self.ok:
            return f"{self.path.name} (BAD: {self.problem})"
        if self.verified:
            return f"{self.path.name} (verifies)"
        from dream_hpc.references.content import check_content

        try:
            found = check_content(self.path)
        except Exception as e:  # describing a failure must never fail
            found = [f"content not checked ({type(e).__name__})"]
        return f"{self.path.name} (no checksum record; content {'BAD: ' + found[0] if found else 'reads intact'})"


def _kit_of(path: Path) -> Path | None:
    """The kit root holding `path` (a manifest.json beside crds_cache/ or mirage_data/), if any."""
    for parent in path.parents:
        if (parent / KIT_MANIFEST).is_file() and ((parent / "crds_cache").is_dir() or (parent / "mirage_data").is_dir()):
            return parent
    return None


def _cache_root_of(path: Path) -> Path | None:
    """The CRDS cache root holding `path` (the directory with mappings/ and references/), if any."""
    for parent in path.parents:
        if (parent / "references").is_dir() and (parent / "mappings").is_dir():
            return parent
    return None


@functools.lru_cache(maxsize=16)
def _load(source: Path, mtime_ns: int, kit: bool) -> Record | None:
    from dream_hpc.references.verify import read_manifest

    try:
        if kit:
            entries = read_manifest(source)
            base = source.parent
        else:
            data = json.loads(source.read_text())
            entries = {rel: (e["sha256"], e.get("size")) for rel, e in data.get("files", {}).items()}
            base = source.parent
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    files = {str((base / rel).resolve()): v for rel, v in entries.items()}
    return Record(source=source, kit=source.parent if kit else None, files=files)


def record_for(path: Path) -> Record | None:
    """The checksum record that covers `path`: its kit's manifest, else its CRDS cache's record."""
    path = Path(path).resolve()
    kit = _kit_of(path)
    if kit is not None:
        src = kit / KIT_MANIFEST
        return _load(src, src.stat().st_mtime_ns, True)
    cache = _cache_root_of(path)
    if cache is not None and (cache / RECORD_NAME).is_file():
        src = cache / RECORD_NAME
        return _load(src, src.stat().st_mtime_ns, False)
    return None


def _sha256(path: Path, size: int) -> str:
    # Big references once per machine and file version (a kit's linearized darks are ~0.8 GB each);
    # small ones once per process: a machine-wide entry per small file would cost more than it saves.
    return cached_sha256(path) if size >= PERSISTENT_DIGEST_BYTES else file_sha256(path)


def check_file(path: str | Path) -> Verdict:
    """One reference file against its record: missing, empty, wrong size, wrong sha256, or fine."""
    p = Path(path).resolve()
    record = record_for(p)
    try:
        actual = p.stat().st_size
    except OSError as e:
        return Verdict(p, f"cannot be read ({e.strerror})", False, record)
    if actual == 0:
        return Verdict(p, "empty file (0 bytes)", record is not None, record)
    entry = record.files.get(str(p)) if record is not None else None
    if entry is None:
        return Verdict(p, None, False, record)
    sha, size = entry
    if size is not None and actual != size:
        kind = "truncated" if actual < size else "grown"
        return Verdict(p, f"{kind}: {actual} bytes, {size} recorded in {record.source.name}", True, record)
    try:
        digest = _sha256(p, actual)
    except OSError as e:
        return Verdict(p, f"unreadable ({e.strerror or e})", True, record)
    if digest != sha:
        return Verdict(p, f"sha256 differs from {record.source.name} (altered or corrupted)", True, record)
    return Verdict(p, None, True, record)


def fix_for(verdict: Verdict, config: str | Path | None = None, context: str | None = None) -> str:
    """The command that repairs this file, for this config."""
    rec = verdict.record
    name = verdict.path.name
    if rec is not None and rec.kit is not None:
        target = f"--for {config} " if config else ""
        return f"rebuild the kit: `dream-hpc refkit build {target}--out {rec.kit}`"
    cache = _cache_root_of(verdict.path)
    if cache is not None:
        ctx = f"--contexts {context} " if context else ""
        return (f"re-fetch exactly that file on a connected node: `CRDS_PATH={cache} crds sync {ctx}--files {name} "
                f"--check-sha1sum --repair-files`, then `dream-hpc cache verify {cache}`")
    return f"replace {verdict.path} with a good copy (MIRAGE_DATA from the same release)"


def write_record(cache_root: Path, digests: dict[Path, tuple[str, int]]) -> Path | None:
    """Write RECORD_NAME in a synced CRDS cache (paths relative to it); None if the cache is read-only."""
    files = {}
    for path, (sha, size) in sorted(digests.items()):
        with contextlib.suppress(ValueError):
            files[Path(path).resolve().relative_to(cache_root.resolve()).as_posix()] = {"sha256": sha, "size": size}
    text = json.dumps({"written_by": "dream-hpc cache verify", "files": files}, indent=1, sort_keys=True) + "\n"
    try:
        atomic_write_text(cache_root / RECORD_NAME, text)
    except OSError:
        return None
    return cache_root / RECORD_NAME
