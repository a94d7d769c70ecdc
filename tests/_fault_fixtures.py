"""Fixtures for the fault tests: a damaged copy of the shared kit, a tiny completed survey copied per case.

The shared kit is never modified: a "copy" is a tree of symlinks to its files, with real copies of the
files a test damages (truncating a symlinked or hard-linked file would damage the shared kit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def kit_copy(kit: Path, dest: Path, real: tuple[str, ...] = ("manifest.json", "manifest.json.sha256")) -> Path:
    """`dest` mirrors `kit`: directories recreated, files symlinked, except `real` (paths relative to
    the kit, copied), so they can be damaged without touching the shared kit."""
    kit = kit.resolve()
    for dirpath, _dirs, files in os.walk(kit):
        rel = Path(dirpath).relative_to(kit)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            src, dst = Path(dirpath) / name, dest / rel / name
            if (rel / name).as_posix() in real:
                shutil.copy2(src, dst)
            else:
                dst.symlink_to(src)
    return dest


def damage(kit_dir: Path, rel: str, keep: float = 0.6) -> Path:
    """Replace the symlink `rel` in a kit copy by a real copy truncated to `keep` of its size."""
    path = kit_dir / rel
    src = path.resolve()
    path.unlink()
    shutil.copyfile(src, path)
    os.truncate(path, int(src.stat().st_size * keep))
    return path


def retarget(config: Path, kit_dir: Path, dest: Path) -> Path:
    """A copy of `config` (at `dest`) pointed at `kit_dir`."""
    cfg = yaml.safe_load(config.read_text())
    cfg["references"].update(crds_path=str(kit_dir / "crds_cache"), mirage_data=str(kit_dir / "mirage_data"))
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def dark_of(config: Path, detector: str) -> str:
    """The CRDS dark Detector1 uses for `detector`'s units of `config` (looked up in a subprocess:
    CRDS reads its environment once per process)."""
    code = ("import sys; from dream_hpc.config import load_config; from dream_hpc.stages.preflight import "
            "check_inputs; from dream_hpc.plan.pointings import make_plan; cfg = load_config(sys.argv[1]); "
            "check_inputs(cfg); from dream_hpc.references.lookup import best_references; "
            "u = next(u for u in make_plan(cfg) if u.detector == sys.argv[2]); "
            "print(best_references(u, ['dark'])['dark'].name)")
    proc = subprocess.run([sys.executable, "-c", code, str(config), detector], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def two_detector_config(tmp_path_factory: pytest.TempPathFactory, refkit_dir: Path) -> Path:
    """One tile x 2 dithers x (NRCB1 F150W + NRCB5 F277W), SUB400P BRIGHT2 x4 = 4 units."""
    from _chain_fixtures import demo_like, write_config

    d = tmp_path_factory.mktemp("faults2")
    cfg = demo_like(refkit_dir, d / "catalog.ecsv",
                    pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                    instrument={"readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}})
    return write_config(d, cfg)


# --- mounts (root only): a read-only view of the kit, a small filesystem to fill -------------------
def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def bind_read_only(src: Path, target: Path) -> bool:
    """`target` shows `src` read-only (a bind mount remounted ro); False where we may not mount."""
    if not _mount("--bind", str(src), str(target)):
        return False
    if not _mount("-o", "remount,ro,bind", str(target)):
        unmount(target)
        return False
    return True


def mount_tmpfs(target: Path, size: str) -> None:
    assert _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)), f"cannot mount a tmpfs on {target}"


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` (following the kit's layout, not symlinks out of it): size and mtime."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return out
