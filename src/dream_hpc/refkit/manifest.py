"""The kit manifest: sha256, size and role of every file, the build parameters, and its own hash.

`manifest.json` is what provenance records and `dream-hpc cache verify` checks files against;
`manifest.json.sha256` (sha256sum format) pins the manifest itself. Nothing time-dependent goes
in, so the same seed and software give the same manifest, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dream_hpc.core.digests import sha256_file

MANIFEST = "manifest.json"
MANIFEST_SHA256 = "manifest.json.sha256"
NOT_LISTED = {MANIFEST, MANIFEST_SHA256, ".built"}


def write_manifest(root: Path, roles: dict[str, str], header: dict[str, Any]) -> tuple[Path, str]:
    """Hash every file under `root` into `root`/manifest.json; returns (path, sha256 of the manifest).

    `roles` maps paths relative to `root` to a short description; every file must have one."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in NOT_LISTED:
            continue
        if rel not in roles:
            raise RuntimeError(f"kit file without a role: {rel}")
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size, "role": roles[rel]}
    unknown = sorted(set(roles) - set(files))
    if unknown:
        raise RuntimeError(f"kit files named but not written: {unknown}")
    doc = {**header, "n_files": len(files), "total_bytes": sum(f["size"] for f in files.values()), "files": files}
    text = json.dumps(doc, indent=1, sort_keys=False) + "\n"
    path = root / MANIFEST
    path.write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (root / MANIFEST_SHA256).write_text(f"{digest}  {MANIFEST}\n")
    return path, digest


def manifest_sha256(root: Path) -> str:
    """The recorded sha256 of a kit's manifest, checked against the manifest's actual bytes."""
    path = root / MANIFEST
    recorded = (root / MANIFEST_SHA256).read_text().split()[0]
    actual = sha256_file(path)
    if recorded != actual:
        raise ValueError(f"{path}: sha256 {actual} differs from {MANIFEST_SHA256} ({recorded}); "
                         "the manifest was edited: rebuild the kit with `dream-hpc refkit build`")
    return actual
