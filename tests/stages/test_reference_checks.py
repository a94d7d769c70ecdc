"""References verified against their checksum record before any compute; run directories that cannot
hurt; errors whose fix works for the config (`refkit build --for CONFIG`).

The kit is never modified: damage is done to a mirror of symlinks (tests/_fault_fixtures.py) whose
damaged file is a real, truncated copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _chain_fixtures import cli
from _fault_fixtures import damage, dark_of, kit_copy, retarget

from dream_hpc.core.journal import journal_files, read_file

ROOT = Path(__file__).resolve().parents[2]


def _records(run: Path) -> list[dict]:
    return sorted((r for f in journal_files(run / "journal") for r in read_file(f).records), key=lambda r: r["time"])


@pytest.mark.slow
def test_truncated_dark_is_named_before_compute_and_the_other_detector_completes(
        two_detector_config: Path, refkit_dir: Path, tmp_path: Path) -> None:
    """The issue's case: NRCB5's Detector1 dark cut to 60%. One line before any compute names the file
    and the exact fix; only NRCB5's units are held back (failed, never started); NRCB1's run. A jwst step
    that fails anyway names the references it used and whether each verifies."""
    kit = kit_copy(refkit_dir, tmp_path / "kit")
    name = dark_of(two_detector_config, "NRCB5")
    assert name != dark_of(two_detector_config, "NRCB1")
    damage(kit, f"crds_cache/references/jwst/nircam/{name}", keep=0.6)
    config = retarget(two_detector_config, kit, two_detector_config.parent / "bad-dark.yaml")
    cli(["plan", str(config), "--out", str(tmp_path / "p")], check=True)
    units = [u["unit_id"] for u in json.loads((tmp_path / "p" / "plan.json").read_text())["units"]]
    b5 = sorted(u for u in units if u.endswith("nrcb5"))
    b1 = sorted(u for u in units if u.endswith("nrcb1"))
    assert len(b5) == 2 and len(b1) == 2
    run = tmp_path / "run"
    proc = cli(["run", str(config), "--out", str(run)], env={"DREAM_HPC_TEST_FAULT": f"{b1[1]}:detector1:dark_current:raise"})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]

    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"reference check: {kit / 'crds_cache/references/jwst/nircam' / name}: truncated"), first
    assert f"refkit build --for {config} --out {kit}" in first and "holding back the 2 unit(s)" in first, first
    recs = _records(run)
    started = {r["unit"] for r in recs if r["kind"] == "unit_start"}
    assert not started & set(b5), "a unit with a bad reference was started"
    failed = {r["unit"]: r["data"] for r in recs if r["kind"] == "unit_failed"}
    for u in b5:
        assert failed[u]["step"] == "references" and name in failed[u]["error"], failed[u]
    done = {r["unit"] for r in recs if r["kind"] == "unit_done"}
    assert b1[0] in done  # the other detector's units run
    # the injected failure inside dark_current names the dark it used, which verifies
    error = failed[b1[1]]["error"]
    assert "injected test fault" in error and "references of dark_current:" in error, error
    assert f"{dark_of(two_detector_config, 'NRCB1')} (verifies)" in error, error
    # ... and the first held unit's failure is the first record after the run started: before any compute
    kinds = [(r["kind"], r["unit"]) for r in recs if r["kind"] in ("unit_start", "unit_failed")]
    assert {u for _, u in kinds[:2]} == set(b5) and all(k == "unit_failed" for k, _ in kinds[:2]), kinds


def _py(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_check_file_against_kit_manifest(refkit_dir: Path, tmp_path: Path) -> None:
    """Truncated, altered (same size) and intact files, judged by the kit manifest; the cost is a
    stat for a size mismatch and one hash per file version per machine."""
    from dream_hpc.references.checksums import check_file, fix_for

    kit = kit_copy(refkit_dir, tmp_path / "kit")
    rel = "crds_cache/references/jwst/nircam/jwst_nircam_gain_0001.fits"
    intact = check_file(kit / rel)
    assert intact.ok and intact.verified and intact.short().endswith("(verifies)")
    cut = damage(kit, rel, keep=0.6)
    v = check_file(cut)
    assert not v.ok and v.problem.startswith("truncated:") and "manifest.json" in v.problem
    assert fix_for(v, "survey.yaml") == f"rebuild the kit: `dream-hpc refkit build --for survey.yaml --out {kit}`"
    data = bytearray((refkit_dir / rel).read_bytes())
    data[-100] ^= 0xFF
    cut.write_bytes(bytes(data))
    v = check_file(cut)
    assert not v.ok and "sha256 differs" in v.problem


def test_synced_cache_record_written_by_cache_verify(refkit_dir: Path, tmp_path: Path) -> None:
    """A real (non-kit) CRDS cache: `cache verify` writes the checksum record at sync time; a file
    truncated afterwards is then named with `crds sync --files NAME ... --repair-files`."""
    import shutil

    cache = tmp_path / "cache"
    src = refkit_dir / "crds_cache"
    shutil.copytree(src / "config", cache / "config")
    shutil.copytree(src / "mappings", cache / "mappings")
    refs = cache / "references" / "jwst" / "nircam"
    refs.mkdir(parents=True)
    for p in sorted((src / "references" / "jwst" / "nircam").glob("jwst_nircam_gain_*.fits")):
        shutil.copyfile(p, refs / p.name)
    proc = cli(["cache", "verify", str(cache), "--quiet"])
    assert "checksum record written" in proc.stdout, proc.stdout + proc.stderr
    record = json.loads((cache / "dream-hpc-checksums.json").read_text())
    assert set(record["files"]) == {f"references/jwst/nircam/{p.name}" for p in refs.iterdir()}
    target = next(refs.iterdir())
    os.truncate(target, target.stat().st_size // 2)
    code = ("import sys; from dream_hpc.references.checksums import check_file, fix_for; v = check_file(sys.argv[1]); "
            "print(v.problem); print(fix_for(v, context='jwst_0001.pmap'))")
    out = _py(code, str(target)).stdout.splitlines()
    assert out[0].startswith("truncated:") and "dream-hpc-checksums.json" in out[0], out
    assert f"crds sync --contexts jwst_0001.pmap --files {target.name} --check-sha1sum --repair-files" in out[1]
    assert f"dream-hpc cache verify {cache}" in out[1]


# --- run directories that cannot hurt --------------------------------------------------------------
@pytest.mark.parametrize("command", ["plan", "run", "survey", "mosaic"])
def test_out_refuses_root_home_and_foreign_directories(command: str, tmp_path: Path) -> None:
    config = str(ROOT / "config" / "demo.yaml")
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("x")
    for out, expected in (("/", "root directory"), (str(home), "home directory"),
                          (str(foreign), "is not a dream-hpc run (it holds chapter1.tex)")):
        proc = cli([command, config, "--out", out], env={"HOME": str(home)})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        # `mosaic` needs an existing run: it refuses anything else first
        assert expected in proc.stderr or (command == "mosaic" and "not a run directory" in proc.stderr), proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["chapter1.tex"]
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def test_empty_or_non_mapping_config_is_an_error(tmp_path: Path) -> None:
    for text, expected in (("", "is empty"), ("# nothing\n", "is empty"), ("{}\n", "is empty"),
                           ("- a\n- b\n", "not a list")):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        proc = cli(["plan", str(path), "--out", str(tmp_path / "run")])
        assert proc.returncode == 2 and expected in proc.stderr and "config/demo.yaml" in proc.stderr, proc.stderr
        assert not (tmp_path / "run").exists()


def test_kit_fix_is_the_kit_this_config_needs(tmp_path: Path) -> None:
    """A survey on other detectors, filters, readout and subarray is told the one command that builds
    its kit (`make kit` would build the default kit without them)."""
    import yaml

    from dream_hpc.config import load_config
    from dream_hpc.refkit.builder import plan_kit
    from dream_hpc.refkit.for_config import build_command, kit_request

    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    data["instrument"].update(detectors=["NRCA3", "NRCA5"], filter_pairs=[["F200W", "F444W"], ["F090W", "F356W"]],
                              subarray="SUB160P", readout={"readpatt": "DEEP8", "ngroups": 7, "nints": 1})
    data["references"].update(crds_path="kits/deep/crds_cache", mirage_data="kits/deep/mirage_data")
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    req = kit_request(cfg)
    assert (req.detectors, req.filters, req.readpatts, req.ngroups_max, req.subarrays) == (
        ["NRCA3", "NRCA5"], ["F200W", "F090W", "F444W", "F356W"], ["DEEP8"], 7, ["SUB160P"])
    assert req.out == tmp_path / "kits" / "deep"
    plan = plan_kit(req.detectors, req.filters, req.readpatts, req.ngroups_max, 1, req.subarrays)  # the builder accepts it
    assert {d.name for d in plan.detectors} == {"NRCA3", "NRCA5"}
    proc = cli(["run", str(path), "--out", str(tmp_path / "run")])
    assert proc.returncode == 2 and f"`{build_command(cfg)}`" in proc.stderr, proc.stderr
    assert f"dream-hpc refkit build --for {path} --out {tmp_path / 'kits' / 'deep'}" in proc.stderr
    assert not (tmp_path / "run").exists()
