"""The offline run environment: serverless read-only CRDS, single-threaded math, no network.

Call `configure()` before the first import of crds, jwst or Mirage in a process: CRDS reads its
environment once. `forbid_network()` makes any socket connection to a non-local address raise,
so a code path that would contact CRDS, Gaia or astroquery fails loudly instead of hanging.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
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


_LOCAL_NAMES = ("", "localhost", "localhost.localdomain", "ip6-localhost")
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_original_sendto = socket.socket.sendto
_original_getaddrinfo = socket.getaddrinfo
_original_lookups = {name: getattr(socket, name) for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr")}
# Every connection or lookup refused since forbid_network(), e.g. pysiaf's import-time version check
# (a requests.get to github.com with no timeout): a run can report what tried to go out.
blocked_attempts: list[str] = []


def _is_local_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.split("%", 1)[0]  # IPv6 scope id
    if host.lower() in _LOCAL_NAMES or host == socket.gethostname():  # own name: MPI, journals
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name other than localhost: resolving it may already leave the machine
    return ip.is_loopback or ip.is_unspecified


def _is_local(address: object) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else None
    return _is_local_host(host)


def _refuse(what: str) -> NetworkForbidden:
    blocked_attempts.append(what)
    return NetworkForbidden(f"{what} is forbidden in a dream-hpc run (compute nodes are offline; use local "
                            "reference data)")


def forbid_network() -> None:
    """Make connections, datagrams and name lookups for non-local hosts raise NetworkForbidden.

    This guards Python-level sockets (requests, urllib, asyncio, astroquery, CRDS's JSON-RPC); the
    offline test also runs the real commands in a network namespace with no route at all.
    """

    def guarded_connect(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            raise _refuse(f"network access to {address!r}")
        return _original_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: object) -> int:
        if not _is_local(address):
            raise _refuse(f"network access to {address!r}")
        return _original_connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: bytes, *args: object) -> int:
        address = args[-1] if args else None
        if self.family != socket.AF_UNIX and not _is_local(address):
            raise _refuse(f"sending a datagram to {address!r}")
        return _original_sendto(self, data, *args)  # type: ignore[arg-type]

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if host is not None and not _is_local_host(host):
            raise _refuse(f"name lookup of {host!r}")
        return _original_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def guarded_lookup(name: str):  # gethostbyname & co. resolve through the C library, not getaddrinfo
        original = _original_lookups[name]

        def lookup(host: object, *args: object) -> object:
            if not _is_local_host(host):
                raise _refuse(f"name lookup of {host!r}")
            return original(host, *args)

        return lookup

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = guarded_sendto  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = guarded_getaddrinfo  # type: ignore[assignment]
    for name in _original_lookups:
        setattr(socket, name, guarded_lookup(name))


_GUARDED = ((socket.socket, ("connect", "connect_ex", "sendto")),
            (socket, ("getaddrinfo", *_original_lookups)))


@contextlib.contextmanager
def network_forbidden() -> Iterator[None]:
    """forbid_network() for the duration of a block, then restore exactly what was there before."""
    saved = [(owner, name, getattr(owner, name)) for owner, names in _GUARDED for name in names]
    forbid_network()
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def allow_network() -> None:
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _original_sendto  # type: ignore[method-assign]
    socket.getaddrinfo = _original_getaddrinfo  # type: ignore[assignment]
    for name, original in _original_lookups.items():
        setattr(socket, name, original)
