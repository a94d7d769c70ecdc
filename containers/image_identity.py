"""The identity of a dream-hpc image: which builder and base made it, and digests of what went in.

Run by containers/recipe.sh at the end of every build (Apptainer's %post and the debootstrap
builder alike), with the system python3.11 and the standard library only:

    python3.11 image_identity.py write --builder B --base BASE [--top /opt/dream-hpc]
    python3.11 image_identity.py labels [--top ...]   # the identity as `name value` label lines
    python3.11 image_identity.py check [--top ...]    # recompute from the image's files, exit 1 if changed

`write` leaves TOP/meta/image.json. dream_hpc.provenance.facts.container() reads it in every run, so a
run's provenance names the image it ran in even where the image file itself is not visible.
`image_id` is a sha256 over every other field but the build time: a changed lock, recipe,
source, config, staged references, base or builder gives another image_id. The packed file's own
sha256 (the .sif or .sqfs) is recorded beside it by the builder and hashed again at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

TOP = "/opt/dream-hpc"
SCHEMA = 1
# Build leftovers and caches: not part of what the image was built from.
_SKIP_NAMES = {"__pycache__", "build", ".pytest_cache", ".ruff_cache"}
# Fields that describe the build event, not the image's content: left out of image_id.
_NOT_IN_ID = ("image_id", "built")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha256(root: Path) -> str:
    """sha256 over every file's relative path and content (sorted; caches and egg-info skipped)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_NAMES and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            h.update(f"{full.relative_to(root)}\0{file_sha256(full)}\n".encode())
    return h.hexdigest()


def refs_sha256(refs: Path) -> str:
    """The staged references: the kit's manifest (every file's sha256) if it has one, else a path/size listing.

    Hashing 3 GB of reference files on every build would cost more than the rest of the identity;
    the kit's manifest already holds each file's sha256, and `dream-hpc cache verify` (the image's
    %test) checks the files against it.
    """
    manifest = refs / "manifest.json"
    h = hashlib.sha256((refs / "CONTEXT").read_bytes() if (refs / "CONTEXT").is_file() else b"")
    if manifest.is_file():
        h.update(b"manifest\0" + file_sha256(manifest).encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(refs):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            h.update(f"{full.relative_to(refs)}\0{full.stat().st_size}\n".encode())
    return h.hexdigest()


def os_release(root: Path = Path("/")) -> str:
    fields = {}
    try:
        for line in (root / "etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value.strip().strip('"')
    except OSError:
        return ""
    version = root / "etc/debian_version"
    point = f" ({version.read_text().strip()})" if version.is_file() else ""
    return fields.get("PRETTY_NAME", "") + point


def identity(top: Path, builder: str, base: str) -> dict[str, Any]:
    """The identity fields of the image whose files are under `top` (image_id included)."""
    commit = top / "meta" / "git_commit"
    info: dict[str, Any] = {
        "schema": SCHEMA,
        "builder": builder,
        "base": base,
        "os": os_release(),
        "python": platform.python_version(),
        "lock_sha256": file_sha256(top / "requirements.lock"),
        "recipe_sha256": file_sha256(top / "recipe.sh"),
        "definition_sha256": file_sha256(top / "dream-hpc.def") if (top / "dream-hpc.def").is_file() else "",
        "source_sha256": tree_sha256(top / "source"),
        "config_sha256": tree_sha256(top / "config"),
        "refs_sha256": refs_sha256(top / "refkit"),
        "git_commit": commit.read_text().strip() if commit.is_file() else "",
    }
    info["image_id"] = image_id(info)
    return info


def image_id(info: dict[str, Any]) -> str:
    content = {k: v for k, v in info.items() if k not in _NOT_IN_ID}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="image_identity.py", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("write", "labels", "check"))
    p.add_argument("--top", default=TOP, type=Path, help="the image's dream-hpc directory (default %(default)s)")
    p.add_argument("--builder", help="write: apptainer | debootstrap")
    p.add_argument("--base", help="write: the base image or root filesystem the builder started from")
    args = p.parse_args(argv)
    path = args.top / "meta" / "image.json"
    if args.command == "write":
        if not args.builder or not args.base:
            p.error("write needs --builder and --base")
        info = identity(args.top, args.builder, args.base)
        info["built"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
        print(f"image identity: {info['image_id']} ({args.builder} on {args.base})")
        return 0
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"image_identity: {path}: no readable identity ({e}); the image was not built by containers/recipe.sh",
              file=sys.stderr)
        return 1
    if args.command == "labels":
        for key in ("image_id", "builder", "base", "lock_sha256"):
            print(f"dream-hpc.image.{key} {recorded.get(key, '')}")
        return 0
    now = identity(args.top, recorded.get("builder", ""), recorded.get("base", ""))
    changed = [k for k in now if k not in _NOT_IN_ID and now[k] != recorded.get(k)]
    if changed or now["image_id"] != recorded.get("image_id"):
        print(f"image_identity: {path} no longer matches the image's files: {', '.join(changed) or 'image_id'}",
              file=sys.stderr)
        return 1
    print(f"image identity {now['image_id']} matches the image's files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
