"""Copy-on-write copies of a cached reference model: each step gets a private model for almost nothing.

A kept reference is handed to every step as its own copy, because jwst writes into some reference
arrays (stcal's ramp fit scales read noise by the gain in place; dark_sub zeroes NaNs of the dark) and a
shared model would carry one unit's changes into the next. A deep copy, though, costs more than the
read it saves on a flight-size dark: on this kind of machine filling fresh pages runs at ~0.35 GB/s
(page faults, mostly system time), so copying a 187-frame NIRCam FULL dark (6.3 GB, SCI + ERR) takes
longer than jwst's own load of it from the page cache.

So the large arrays of a kept model are moved, once, into anonymous memory files (`memfd_create`); the
cached model sees them through read-only shared mappings (nothing can change the cache: a write
raises), and each step's copy sees them through private writable mappings of the same file (MAP_PRIVATE):
the kernel shares every page until the step writes one, and then copies only that page, for that
copy alone. Values, dtypes (byte order included) and shapes are the loaded ones, so a step computes
exactly what it computes on the model it opens itself. Metadata and small arrays are deep-copied as
before (the datamodel's own `copy`, with the mapped arrays given through its memo).
"""

from __future__ import annotations

import mmap
import os
import weakref
from typing import Any

import numpy as np

MIN_SHARED_BYTES = 1 << 20  # smaller arrays are deep-copied: a mapping per array is not worth it there

# id(read-only view) -> the memory file holding its bytes; an entry lives as long as its view
_FILES: dict[int, int] = {}


def _release(key: int, fd: int) -> None:
    _FILES.pop(key, None)
    os.close(fd)


def _map(fd: int, nbytes: int, *, private: bool) -> mmap.mmap:
    if private:
        return mmap.mmap(fd, nbytes, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)


def _to_memory_file(arr: np.ndarray) -> np.ndarray:
    """`arr`'s values in a memory file, as a read-only array of the same dtype and shape."""
    fd = os.memfd_create("dream-hpc-reference", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, arr.nbytes)
        with mmap.mmap(fd, arr.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE) as fill:
            np.ndarray(arr.shape, arr.dtype, buffer=fill)[...] = arr
        view = np.ndarray(arr.shape, arr.dtype, buffer=_map(fd, arr.nbytes, private=False))
    except BaseException:
        os.close(fd)
        raise
    _FILES[id(view)] = fd
    weakref.finalize(view, _release, id(view), fd)
    return view


def held_bytes() -> int:
    """Bytes in this process's memory files: what the shared arrays cost (shared memory, counted in a
    process's RSS only as far as it has touched the pages)."""
    return sum(os.fstat(fd).st_size for fd in list(_FILES.values()))


def is_shared(arr: Any) -> bool:
    return isinstance(arr, np.ndarray) and id(arr) in _FILES


def share(model: Any) -> Any:
    """Move `model`'s arrays of MIN_SHARED_BYTES or more into memory files, in place; returns `model`.

    Afterwards those arrays are read-only. Call it once, on the model the cache keeps."""
    seen: dict[int, np.ndarray] = {}

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in list(items):
            if isinstance(value, np.ndarray):
                if value.nbytes >= MIN_SHARED_BYTES and value.dtype.hasobject is False and not is_shared(value):
                    if id(value) not in seen:
                        seen[id(value)] = _to_memory_file(np.ascontiguousarray(value))
                    node[key] = seen[id(value)]
            elif isinstance(value, dict | list):
                walk(value)

    walk(model._instance)
    return model


def private_copy(model: Any) -> Any:
    """A copy of a `share`d model that a step may change at will: its shared arrays copy-on-write."""
    memo: dict[int, Any] = {}

    def walk(node: Any) -> None:
        values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for value in values:
            if is_shared(value) and id(value) not in memo:
                fd = _FILES[id(value)]
                memo[id(value)] = np.ndarray(value.shape, value.dtype, buffer=_map(fd, value.nbytes, private=True))
            elif isinstance(value, dict | list):
                walk(value)

    walk(model._instance)
    return model.copy(memo=memo)
