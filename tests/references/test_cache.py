"""`dream-hpc cache verify` and reference resolution against the real reference kit (no mocks).

Damage is always done to a symlink mirror of the kit (tests/_cache_fixtures.py), never to the kit.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from _cache_fixtures import (
    kit_context,
    kit_unit_specs,
    mirror,
    replace_file,
    run_cli,
    run_python,
    unit_kwargs,
)


def _references(root: Path) -> list[Path]:
    return sorted(p for p in (root / "crds_cache" / "references").rglob("*") if p.is_file())


def _fits_reference(root: Path) -> Path:
    """The largest FITS reference (the dark, in practice): the seed notes' truncated file."""
    return max((p for p in _references(root) if p.suffix == ".fits"), key=lambda p: p.stat().st_size)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_passes_on_fresh_kit(kit: Path) -> None:
    done = run_cli("cache", "verify", str(kit), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    n_refs = len(_references(kit))
    assert "OK" in summary and f"{n_refs} references ({n_refs} by manifest sha256)" in summary, summary


def test_verify_names_truncated_reference(kit: Path, tmp_path: Path) -> None:
    damaged = mirror(kit, tmp_path / "kit")
    target = _fits_reference(damaged)
    original = target.resolve()
    before = _sha256(original)
    replace_file(target, original.read_bytes()[: original.stat().st_size // 2])
    done = run_cli("cache", "verify", str(damaged), "--quiet")
    assert done.returncode == 1, done.stdout
    problems = [ln for ln in done.stdout.splitlines() if ": fix: " in ln or "; fix: " in ln]
    assert len(problems) == 1, done.stdout
    assert target.name in problems[0] and "truncated" in problems[0]
    assert "dream-hpc refkit build" in problems[0]  # the fix for a kit
    assert "1 problem(s)" in done.stdout.splitlines()[-1]
    assert _sha256(original) == before  # the shared kit is untouched


def test_verify_names_edited_mapping(kit: Path, tmp_path: Path) -> None:
    damaged = mirror(kit, tmp_path / "kit")
    rmaps = sorted((damaged / "crds_cache" / "mappings").rglob("*.rmap"))
    target = next(p for p in rmaps if re.search(r"'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'", p.read_text()))
    text = target.read_text()
    edited = re.sub(r"'(\d{4})-(\d\d-\d\d \d\d:\d\d:\d\d)'", lambda m: f"'{int(m[1]) - 1}-{m[2]}'", text, count=1)
    assert edited != text
    replace_file(target, edited.encode())
    done = run_cli("cache", "verify", str(damaged), "--quiet")
    assert done.returncode == 1, done.stdout
    lines = [ln for ln in done.stdout.splitlines() if target.name in ln]
    assert any("checksum mismatch" in ln for ln in lines), done.stdout


def test_verify_checks_content_without_manifest(kit: Path, tmp_path: Path) -> None:
    """A plain CRDS cache (no manifest, no CRDS catalog): a truncated dark is still caught, by its FITS structure."""
    cache = mirror(kit / "crds_cache", tmp_path / "crds_cache")
    done = run_cli("cache", "verify", str(cache), "--quiet")
    assert done.returncode == 0, done.stdout
    assert "by content" in done.stdout
    target = _fits_reference(tmp_path)
    data = target.resolve().read_bytes()
    replace_file(target, data[: len(data) - 2 * 2880])  # a whole number of FITS blocks lost at the end
    done = run_cli("cache", "verify", str(cache), "--quiet")
    assert done.returncode == 1
    line = next(ln for ln in done.stdout.splitlines() if target.name in ln)
    assert "truncated" in line and "crds sync --files " + target.name in line


def test_verify_names_missing_reference(kit: Path, tmp_path: Path) -> None:
    damaged = mirror(kit, tmp_path / "kit")
    target = _fits_reference(damaged)
    target.unlink()
    done = run_cli("cache", "verify", str(damaged), "--quiet")
    assert done.returncode == 1
    assert any(target.name in ln and "not in the cache" in ln for ln in done.stdout.splitlines()), done.stdout


def test_verify_rejects_a_directory_that_is_no_cache(tmp_path: Path) -> None:
    done = run_cli("cache", "verify", str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "neither a CRDS cache" in done.stderr


def test_missing_reference_is_named_with_its_fix(kit: Path, tmp_path: Path) -> None:
    """best_references names the reftype and the sync command instead of CRDS's CrdsNetworkError."""
    spec = kit_unit_specs()[0]
    damaged = mirror(kit, tmp_path / "kit")
    code = f"""
        from dream_hpc.core import offline
        offline.configure(crds_path={str(damaged / 'crds_cache')!r}, context={kit_context(kit)!r})
        offline.forbid_network()
        from dream_hpc.references import lookup as cache
        from dream_hpc.core.workunit import WorkUnit
        unit = WorkUnit(**{unit_kwargs(spec)!r})
        path = cache.best_references(unit, ["dark"])["dark"]
        path.unlink()
        try:
            cache.best_references(unit)
        except Exception as e:
            print(type(e).__name__, e)
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.strip().splitlines()[-1]
    assert out.startswith("UserError dark reference ") and "crds sync" in out and "not in the CRDS cache" in out


def test_reference_names_cover_every_exposure(kit: Path) -> None:
    """What `cache refs` lists: union over units; core imaging types resolve to kit files."""
    specs = kit_unit_specs()
    code = f"""
        import json
        from dream_hpc.core import offline
        offline.configure(crds_path={str(kit / 'crds_cache')!r}, context={kit_context(kit)!r})
        offline.forbid_network()
        from dream_hpc.references import lookup as cache
        from dream_hpc.core.workunit import WorkUnit
        units = [WorkUnit(**kw) for kw in {[unit_kwargs(s) for s in specs]!r}]
        names = cache.reference_names(units)
        per_unit = [sorted(cache.best_references(u).items()) for u in units]
        print(json.dumps({{"names": {{k: sorted(v) for k, v in names.items()}},
                          "per_unit": [[[t, str(p)] for t, p in refs] for refs in per_unit]}}))
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    names = result["names"]
    union = {Path(p).name for refs in result["per_unit"] for _t, p in refs}
    assert set(names) == union
    kit_files = {p.name for p in _references(kit)}
    assert set(names) <= kit_files
    for refs in result["per_unit"]:
        types = {t for t, _p in refs}
        assert {"mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise", "distortion",
                "flat", "photom", "area", "apcorr", "abvegaoffset"} <= types


def test_cache_refs_command(kit: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "survey.yaml"
    cfg.write_text(f"references:\n  crds_path: {kit / 'crds_cache'}\n  context: {kit_context(kit)}\n"
                   "catalog:\n  path: nonexistent.ecsv\n")
    done = run_cli("cache", "refs", str(cfg))
    assert done.returncode == 0, done.stderr[-2000:]
    names = done.stdout.split()
    assert names and set(names) <= {p.name for p in _references(kit)}
    sync = run_cli("cache", "refs", str(cfg), "--format", "crds-sync")
    assert sync.returncode == 0
    assert f"crds sync --contexts {kit_context(kit)} --files" in sync.stdout
    assert all(n in sync.stdout for n in names)


def test_verify_with_config_accepts_a_cache_synced_for_the_survey(kit: Path, tmp_path: Path) -> None:
    """A cache holding only what `cache refs` lists passes with --config, and fails without it."""
    spec = kit_unit_specs()[0]
    cfg = tmp_path / "survey.yaml"
    cfg.write_text(f"references:\n  crds_path: {tmp_path / 'crds_cache'}\n  context: {kit_context(kit)}\n"
                   f"instrument:\n  detectors: [{spec['detector']}]\n  subarray: {spec['subarray']}\n"
                   f"  readout: {{readpatt: {spec['readpatt']}}}\ncatalog:\n  path: nonexistent.ecsv\n")
    cache = mirror(kit / "crds_cache", tmp_path / "crds_cache")
    refs = run_cli("cache", "refs", str(cfg))
    assert refs.returncode == 0, refs.stderr[-2000:]
    needed = set(refs.stdout.split())
    unused = [p for p in _references(tmp_path) if p.name not in needed]
    if not unused:
        pytest.skip("the kit holds nothing this one-detector survey does not use")
    for p in unused:
        p.unlink()
    partial = run_cli("cache", "verify", str(cache), "--quiet")
    assert partial.returncode == 1 and "not in the cache" in partial.stdout
    synced = run_cli("cache", "verify", str(cache), "--config", str(cfg), "--quiet")
    assert synced.returncode == 0, synced.stdout + synced.stderr[-2000:]
