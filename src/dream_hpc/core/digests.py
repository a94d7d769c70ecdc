"""File digests: one sha256 helper, a per-process cache by file version, a machine-wide cache for big files.

Every checksum dream-hpc records (products, references, the image) comes from here, so a product hashed
when its stage writes it is never read again in that process, and a multi-GB reference or .sif image is
hashed once per machine and version, not once per job.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

from dream_hpc.core.rundir import atomic_write_text


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (no caching)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- machine-wide: big files hashed once per version -----------------------------------------
def cache_dir() -> Path:
    """The machine-wide cache directory (DREAM_HPC_CACHE_DIR, else $XDG_CACHE_HOME/dream-hpc)."""
    return Path(os.environ.get("DREAM_HPC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dream-hpc"))


def _cache_file() -> Path:
    return cache_dir() / "digests.json"


def cached_sha256(path: str | Path) -> str:
    """sha256 of a (possibly multi-GB) file, remembered by path, size, mtime and inode.

    A .sif image is hashed once per version, not once per job; an unwritable cache only costs time.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = sha256_file(p)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{p}|")}  # drop stale entries
    cache[key] = digest
    with contextlib.suppress(OSError):
        atomic_write_text(cache_path, json.dumps(cache, indent=0, sort_keys=True))
    return digest


# --- per process: each file version hashed once ---------------------------------------------
# References at least this big are hashed once per machine, not once per process: the machine-wide digest cache
# keeps them by path, size, mtime and inode. A worker otherwise read ~1.2 GB of references per
# detector before its first unit could finish (the kit's linearized darks are ~0.8 GB each).
PERSISTENT_DIGEST_BYTES = 8 << 20


def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _reference_root(path: str) -> bool:
    """Under the CRDS cache or MIRAGE_DATA (read-only references), not a run's products: a machine-wide
    digest file rewritten for each of a survey's thousands of products would cost more than it saves."""
    roots = (os.environ.get("CRDS_PATH"), os.environ.get("MIRAGE_DATA"))
    return any(root and path.startswith(str(Path(root).resolve()) + os.sep) for root in roots)


@functools.lru_cache(maxsize=1024)
def _sha256_cached(key: tuple[str, int, int, int, int]) -> str:
    if key[1] >= PERSISTENT_DIGEST_BYTES and _reference_root(key[0]):
        return cached_sha256(key[0])
    return sha256_file(key[0])


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per process per file version (path, size, mtime, ctime, inode).

    A product is hashed once when its stage writes it; the next stage, in the same process, records
    it as its input without reading it again. A product replaced or truncated is a new version.
    """
    return _sha256_cached(_stat_key(Path(path)))
