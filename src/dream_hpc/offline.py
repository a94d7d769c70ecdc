"""The offline run environment: serverless read-only CRDS, single-threaded math, no network.

Call `configure()` before the first import of crds, jwst or Mirage in a process: CRDS reads its
environment once. `forbid_network()` makes any socket connection to a non-local address raise,
so a code path that would contact CRDS, Gaia or astroquery fails loudly instead of hanging.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# Contains "serverless": CRDS then skips every JSON-RPC call at once (no timeouts, no traffic).
SERVERLESS_URL = "https://jwst-serverless.stsci.edu"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


class NetworkForbidden(OSError):
    """Raised on any attempt to open a connection off this machine during a run."""


def crds_env(crds_path: str | Path, context: str, readonly: bool = True) -> dict[str, str]:
    env = {
        "CRDS_MODE": "local",
        "CRDS_PATH": str(Path(crds_path).resolve()),
        "CRDS_CONTEXT": context,
        "CRDS_SERVER_URL": SERVERLESS_URL,
    }
    if readonly:
        env["CRDS_READONLY_CACHE"] = "1"
    return env


def configure(crds_path: str | Path | None = None, context: str | None = None,
              mirage_data: str | Path | None = None, readonly: bool = True, threads: int = 1) -> dict[str, str]:
    """Set the process environment for an offline run; returns what it set."""
    env: dict[str, str] = {}
    if crds_path is not None and context is not None:
        env.update(crds_env(crds_path, context, readonly))
    if mirage_data is not None:
        env["MIRAGE_DATA"] = str(Path(mirage_data).resolve())
    for var in THREAD_VARS:
        env[var] = str(threads)
    os.environ.update(env)
    return env


_LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")
_original_connect = socket.socket.connect
_original_getaddrinfo = socket.getaddrinfo


def _is_local(address: object) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else ""
    return isinstance(host, str) and (host.startswith(_LOCAL_PREFIXES) or host == "")


def forbid_network() -> None:
    """Make connections and name lookups for non-local hosts raise NetworkForbidden."""

    def guarded_connect(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            raise NetworkForbidden(f"network access to {address!r} is forbidden in a dream-hpc run "
                                   "(compute nodes are offline; use local reference data)")
        return _original_connect(self, address)

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if isinstance(host, str) and host and not host.startswith(_LOCAL_PREFIXES):
            raise NetworkForbidden(f"name lookup of {host!r} is forbidden in a dream-hpc run "
                                   "(compute nodes are offline; use local reference data)")
        return _original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]


def allow_network() -> None:
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.getaddrinfo = _original_getaddrinfo  # type: ignore[assignment]
