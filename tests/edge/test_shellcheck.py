"""Every shell script the project ships passes shellcheck (all severities) and `bash -n`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("slurm/*.sh"), *ROOT.glob("scripts/*.sh"), *ROOT.glob("containers/*.sh")])


@pytest.fixture(scope="module")
def shellcheck(sysdeps: dict[str, bool]) -> str:
    if not sysdeps["shellcheck"]:
        pytest.skip("shellcheck is not installed and cannot be here (not root / no apt-get): "
                    "run scripts/install-sysdeps.sh as root")
    return "shellcheck"


def test_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"full_survey.sh", "image3.sh", "common.sh", "install-sysdeps.sh", "local-slurm.sh",
            "make-crds-cache.sh", "recipe.sh", "build-rootfs.sh", "image-chroot.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shellcheck_clean(shellcheck: str, script: Path) -> None:
    # -x follows `source` (slurm/common.sh); run from the repo root so its source= path resolves.
    done = subprocess.run([shellcheck, "-x", "--severity=style", str(script.relative_to(ROOT))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"shellcheck {script.name}:\n{done.stdout}{done.stderr}"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_shellcheck_catches_a_real_mistake(shellcheck: str, tmp_path: Path) -> None:
    """The check above can fail: an unquoted variable in `rm` is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/bin/bash\ndir=$1\nrm -rf $dir/*\n')
    done = subprocess.run([shellcheck, str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "SC2086" in done.stdout
