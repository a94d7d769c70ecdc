"""The user cache of prepared catalogs: keep-newest-N after each prepare, `catalog prepare --list/--clean`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_catalog_dream import ROOT, config, dream_pair

from dream_hpc.catalog import prepared, prepared_cache
from dream_hpc.cli import main
from dream_hpc.config import ConfigError
from dream_hpc.plan import pointings


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "cache"))


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_the_cache_keeps_the_newest_prepared_catalogs_per_survey(tmp_path: Path) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path, n=500)
    cache = tmp_path / "cache" / "catalogs"
    made = []
    for i, limit in enumerate((27.0, 27.5, 28.0)):  # three settings: three keys, three files
        cfg = config(tmp_path, main_path, phot_path, mag_limit=limit)
        made.append(prepared.prepare(cfg, pointings.make_plan(cfg)).path)
        _age(made[-1], 100 - i)  # each older than the next
    other = cache / "another-survey-0123456789abcdef0123.h5"  # not this survey's: untouched
    other.write_bytes(b"x")
    foreign = cache / "notes.h5"  # not a prepared catalog's name: never touched
    foreign.write_bytes(b"x")
    left = {c.path for c in prepared_cache.cached(cache)}
    assert left == {made[1], made[2], other}  # catalog.prepared_keep defaults to 2
    assert foreign.exists()
    # how many are kept is not part of what a file was prepared from: changing it reuses the file
    cfg = config(tmp_path, main_path, phot_path, mag_limit=28.0, prepared_keep=1)
    assert prepared.prepare(cfg, pointings.make_plan(cfg)).reused
    cfg = config(tmp_path, main_path, phot_path, mag_limit=26.0, prepared_keep=1)
    newest = prepared.prepare(cfg, pointings.make_plan(cfg)).path
    assert {c.path for c in prepared_cache.cached(cache)} == {newest, other}
    # 0 keeps all
    cfg = config(tmp_path, main_path, phot_path, mag_limit=25.0, prepared_keep=0)
    prepared.prepare(cfg, pointings.make_plan(cfg))
    assert len(prepared_cache.cached(cache)) == 3
    # an explicit --out is the user's file, never counted in the cache
    cfg = config(tmp_path, main_path, phot_path, mag_limit=24.0, prepared_keep=1)
    prepared.prepare(cfg, pointings.make_plan(cfg), tmp_path / "mine.h5")
    assert len(prepared_cache.cached(cache)) == 3 and (tmp_path / "mine.h5").is_file()


def test_list_and_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path, n=500)
    cache = tmp_path / "cache" / "catalogs"
    paths = []
    for i, limit in enumerate((27.0, 27.5)):
        cfg = config(tmp_path, main_path, phot_path, mag_limit=limit, prepared_keep=0)
        paths.append(prepared.prepare(cfg, pointings.make_plan(cfg)).path)
        _age(paths[-1], 100 - i)
    first = config(tmp_path, main_path, phot_path, mag_limit=27.0)  # the older file's config
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = cache / f".tmp-{paths[0].name}.{int(dead.stdout)}.staging"  # a prepare killed mid-way
    stale.write_bytes(b"x")
    live = cache / f".tmp-{paths[0].name}.{os.getpid()}"  # one still running (this process): kept
    live.write_bytes(b"x")

    assert main(["catalog", "prepare", "--list", str(first.source)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and str(paths[1]) in out[0] and str(paths[0]) in out[1]  # newest first
    assert "this config's" in out[1] and "this config's" not in out[0]
    assert "2 prepared catalogs" in out[2] and "1 stale staging" in out[2]

    assert main(["catalog", "prepare", "--clean", str(first.source)]) == 0  # keeps CONFIG's only
    assert [c.path for c in prepared_cache.cached(cache)] == [paths[0]]
    assert not stale.exists() and live.exists()
    assert "2 removed; 1 prepared catalogs left" in capsys.readouterr().out
    assert main(["catalog", "prepare", "--clean", "--keep", "1"]) == 0  # the newest per survey
    assert [c.path for c in prepared_cache.cached(cache)] == [paths[0]]
    assert main(["catalog", "prepare", "--clean"]) == 0
    assert prepared_cache.cached(cache) == []


def test_bad_keep_values_are_one_line(tmp_path: Path) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path, n=50)
    with pytest.raises(ConfigError, match="catalog.prepared_keep: -1"):
        config(tmp_path, main_path, phot_path, prepared_keep=-1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DREAM_HPC_CACHE_DIR": str(tmp_path / "cache")}
    for args, needle in ((["--clean", "--keep", "-2"], "--keep: -2"), ([], "give the survey CONFIG")):
        bad = subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "prepare", *args],
                             capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
        assert bad.returncode == 2 and len(lines) == 1 and needle in lines[0], bad.stderr


def test_a_run_takes_the_cached_file_instead_of_reading_the_catalog_again(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path, n=500)
    cfg = config(tmp_path, main_path, phot_path)
    units = pointings.make_plan(cfg)
    cached = prepared.prepare(cfg, units)  # what `catalog check` / `plan` leave in the user cache
    assert not cached.reused

    def no_read(*args, **kwargs):
        raise AssertionError("the catalog was read again")

    monkeypatch.setattr(prepared, "open_inputs", no_read)
    run_file = tmp_path / "run" / prepared.RUN_FILE
    got = prepared.prepare(cfg, units, run_file)
    assert got.reused and got.path == run_file and got.n_rows == cached.n_rows
    assert run_file.read_bytes() == cached.path.read_bytes()
    assert got.report.line() == cached.report.line()
    # another setting: another key; the run's own file is made from the catalog
    other = config(tmp_path, main_path, phot_path, mag_limit=26.0)
    with pytest.raises(AssertionError, match="read again"):
        prepared.prepare(other, pointings.make_plan(other), tmp_path / "run2" / prepared.RUN_FILE)
