"""Nothing in dream-hpc contacts the network: proofs with sockets blocked, then with no network at all.

(a) In a process where `offline.forbid_network()` is active, CRDS resolves every reference type the
    three pipelines can ask for from the kit's pinned context, `cache verify` passes, and nothing
    even tried to connect. (b) Stronger: the real commands run in a network namespace that has no
    route anywhere (`unshare -n`, as root): `dream-hpc cache verify` and a real Detector1 run succeed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _cache_fixtures import kit_context, kit_unit_specs, make_tiny_uncal, run_cli, run_python, unit_kwargs


def test_forbid_network_blocks_every_socket_path() -> None:
    code = """
        import socket, urllib.request
        from dream_hpc.core import offline
        offline.forbid_network()
        attempts = {
            "create_connection": lambda: socket.create_connection(("203.0.113.7", 443), timeout=1),
            "connect_ex": lambda: socket.socket().connect_ex(("203.0.113.7", 443)),
            "udp_sendto": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("203.0.113.7", 53)),
            "gethostbyname": lambda: socket.gethostbyname("jwst-crds.stsci.edu"),
            "getaddrinfo_lookalike": lambda: socket.getaddrinfo("localhost.example.org", 443),
            "urlopen": lambda: urllib.request.urlopen("https://jwst-crds.stsci.edu", timeout=2),
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                print(name, "NOT BLOCKED")
            except OSError as e:
                print(name, "blocked" if "forbidden in a dream-hpc run" in str(e) else f"other error {e!r}")
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname(), timeout=2)  # loopback stays allowed
        print("loopback ok", len(offline.blocked_attempts))
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert all(line.endswith("blocked") for line in lines[:-1]), done.stdout
    assert lines[-1] == "loopback ok 6"


def test_references_resolve_and_verify_with_sockets_blocked(kit: Path) -> None:
    """Every reftype of every step (skipped ones too) and every pars-* type resolves, with no attempt to connect."""
    code = f"""
        import json
        from dream_hpc.core import offline
        offline.configure(crds_path={str(kit / 'crds_cache')!r}, context={kit_context(kit)!r},
                          mirage_data={str(kit / 'mirage_data')!r})
        offline.forbid_network()
        from dream_hpc.references import lookup as cache, verify as integrity
        from dream_hpc.core.workunit import WorkUnit
        types = sorted({{t for group in (cache.all_step_reftypes(), cache.parameter_reftypes())
                         for names in group.values() for t in names}})
        resolved = {{}}
        for kw in {[unit_kwargs(s) for s in kit_unit_specs()]!r}:
            unit = WorkUnit(**kw)
            refs = cache.best_references(unit, types)
            resolved[unit.unit_id] = {{t: str(p) for t, p in refs.items()}}
        report = integrity.verify({str(kit)!r}, progress_stream=None)
        print(json.dumps({{"types": types, "resolved": resolved, "verify_ok": report.ok,
                          "problems": [p.line() for p in report.problems],
                          "blocked": offline.blocked_attempts}}))
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["types"]) > 40  # prefetch types of all steps plus pars-* of all steps
    for unit_id, refs in result["resolved"].items():
        assert all(Path(p).is_file() for p in refs.values()), unit_id
        assert {"dark", "flat", "photom", "distortion", "apcorr"} <= set(refs), (unit_id, sorted(refs))
    assert result["verify_ok"], result["problems"]
    assert result["blocked"] == []  # nothing even tried to go out


def _netns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_netns = pytest.mark.skipif(not _netns_available(), reason="needs `unshare -n` (root or user namespaces)")
NO_NETWORK = ("unshare", "-n")


@needs_netns
def test_cache_verify_runs_without_any_network(kit: Path) -> None:
    done = run_cli("cache", "verify", str(kit), "--quiet", prefix=NO_NETWORK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout.splitlines()[-1]


@needs_netns
@pytest.mark.slow
def test_detector1_runs_without_any_network(kit: Path, tmp_path: Path) -> None:
    """A real Detector1 run on a small uncal, in a namespace where no address outside is reachable.

    Full frame: jwst 3.0's dark step does not cut a full-frame dark down to a subarray, and this
    test is about the network, not about which subarrays the kit serves (the chain tests cover those).
    """
    spec = dict(kit_unit_specs()[0], subarray="FULL")
    if "xstart" in spec:  # a kit of subarray references (DREAM_HPC_TEST_UNITS): keep its geometry
        spec = kit_unit_specs()[0]
    uncal = make_tiny_uncal(spec, tmp_path, ngroups=3)
    code = f"""
        import socket
        try:
            socket.create_connection(("192.0.2.1", 443), timeout=3)
            raise SystemExit("the namespace has a route out: not a proof")
        except OSError as e:
            print("no route:", e.errno)
        from dream_hpc.core import offline
        offline.configure(crds_path={str(kit / 'crds_cache')!r}, context={kit_context(kit)!r})
        from jwst.pipeline import Detector1Pipeline
        Detector1Pipeline.call({str(uncal)!r}, output_dir={str(tmp_path)!r}, save_results=True,
                               steps={{"jump": {{"maximum_cores": "1"}}}})
    """
    done = run_python(code, prefix=NO_NETWORK, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "no route:" in done.stdout
    rate = tmp_path / uncal.name.replace("_uncal", "_rate")
    assert rate.is_file(), sorted(p.name for p in tmp_path.iterdir())
    from astropy.io import fits

    header = fits.getheader(rate)
    assert header["CRDS_CTX"] == kit_context(kit)
    for key in ("R_MASK", "R_SATURA", "R_SUPERB", "R_LINEAR", "R_GAIN", "R_READNO"):
        assert str(header[key]).startswith("crds://"), (key, header.get(key))
    assert header["S_RAMP"] == "COMPLETE"
    assert "CrdsNetworkError" not in done.stderr
