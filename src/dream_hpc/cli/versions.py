"""`dream-hpc versions [--check]`: installed packages against requirements.lock."""

from __future__ import annotations

import argparse
import sys

from dream_hpc.core.versions import KEY_PACKAGES, installed, lock_path, mismatches, read_lock


def _cmd_versions(args: argparse.Namespace) -> int:
    lock = read_lock(args.lock)
    have = installed()
    for name in KEY_PACKAGES:
        print(f"{name:14s} {have.get(name, '-'):12s} (lock {lock.get(name, '-')})")
    if not args.check:
        return 0
    problems = mismatches(lock, have)
    if problems:
        for p in problems:
            print(f"version mismatch: {p}", file=sys.stderr)
        print(f"dream-hpc versions: {len(problems)} package(s) differ from {args.lock or lock_path()}; "
              "reinstall with `make venv` (or pip install --require-hashes -r requirements.lock)",
              file=sys.stderr)
        return 1
    print(f"all {len(lock)} locked packages match")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", help="show key package versions; --check compares with the lock file")
    p.add_argument("--check", action="store_true", help="exit 1 naming every package that differs from the lock")
    p.add_argument("--lock", default=None, help="lock file (default: requirements.lock of this checkout)")
    p.set_defaults(func=_cmd_versions)
