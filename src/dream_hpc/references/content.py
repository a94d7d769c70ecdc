"""Is a reference file intact? FITS structure and checksums, ASDF blocks, digests streamed with progress.

Used by `cache verify` when neither the kit manifest nor CRDS's catalog has a checksum for a file.
"""

from __future__ import annotations

import hashlib
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

FITS_BLOCK = 2880
_CHUNK = 4 << 20


class ReadProgress:
    """Bytes-read progress on stderr for big caches: a live line on a terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, stream: TextIO | None = sys.stderr, min_total: int = 256 << 20):
        self.total, self.done, self.stream = total, 0, stream if total >= min_total else None
        self.tty = bool(self.stream and self.stream.isatty())
        self.t0 = self.last = time.monotonic()

    def advance(self, nbytes: int, name: str) -> None:
        self.done += nbytes
        now = time.monotonic()
        if self.stream is None or now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate else 0
        msg = (f"cache verify: {self.done / 2**30:.2f}/{self.total / 2**30:.2f} GiB "
               f"({100 * self.done / self.total:.0f}%), {rate / 2**20:.0f} MiB/s, ~{eta:.0f} s left: {name}")
        self.stream.write(("\r" + msg + "\033[K") if self.tty else msg + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\n")


def stream_digests(path: Path, algorithms: Iterable[str], progress: ReadProgress | None = None) -> dict[str, str]:
    """Hex digests of a file in one streaming pass (never the whole file in memory)."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            for h in hashes.values():
                h.update(view[:n])
            if progress:
                progress.advance(n, path.name)
    return {a: h.hexdigest() for a, h in hashes.items()}


def check_fits(path: Path) -> list[str]:
    """Structural and checksum problems of a FITS file (empty list: sound)."""
    from astropy.io import fits

    size = path.stat().st_size
    found: list[str] = []
    if size % FITS_BLOCK:
        found.append(f"size {size} is not a multiple of {FITS_BLOCK} bytes (truncated)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # checksum=True makes astropy recompute CHECKSUM/DATASUM (reading all data) where present
            with fits.open(path, memmap=False, checksum=True, lazy_load_hdus=False) as hdul:
                for i, hdu in enumerate(hdul):
                    info = hdu.fileinfo()
                    end = info["datLoc"] + info["datSpan"]
                    if end > size:
                        name = hdu.name or str(i)
                        found.append(f"HDU {name} needs {end} bytes but the file has {size} (truncated)")
        except Exception as e:
            found.append(f"not a readable FITS file ({type(e).__name__}: {e})")
    for w in caught:
        text = str(w.message).strip()
        if "truncated" in text and not any("truncated" in f for f in found):
            found.append(f"truncated ({text})")
        elif "verification failed" in text:
            found.append(f"FITS {text.rstrip('.')} (corrupted)")
    if len(found) > 1 and "HDU" in found[1] and "multiple of" in found[0]:
        found.pop(0)  # the HDU that runs past the end says more than the odd file size
    return found


def check_asdf(path: Path) -> list[str]:
    """Problems opening an ASDF file and reading all of its array blocks."""
    import asdf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with asdf.open(path, lazy_load=False, memmap=False) as af:
                _touch_arrays(af.tree)
        except Exception as e:
            return [f"not a readable ASDF file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"]
    return []


def _touch_arrays(node: object, depth: int = 0) -> None:
    import numpy as np

    if depth > 50:
        return
    if isinstance(node, dict):
        for v in node.values():
            _touch_arrays(v, depth + 1)
    elif isinstance(node, list | tuple):
        for v in node:
            _touch_arrays(v, depth + 1)
    elif isinstance(node, np.ndarray) or type(node).__name__ == "NDArrayType":
        np.asarray(node).sum()  # forces the block to be read in full


def check_content(path: Path) -> list[str]:
    if path.suffix.lower() == ".fits":
        return check_fits(path)
    if path.suffix.lower() == ".asdf":
        return check_asdf(path)
    return []
