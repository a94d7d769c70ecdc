"""The `dream-hpc` command: the only place commands are registered, the top of the house.

Each module of this package defines ``add_commands(subparsers)`` for one group of subcommands; each
subcommand sets ``func`` (taking the parsed args, returning an exit code). Command modules import the
layers below them inside their handlers, so `dream-hpc --help` stays fast (no jwst, Mirage or pysiaf).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from dream_hpc import __version__
from dream_hpc.config import ConfigError
from dream_hpc.core.errors import UserError
from dream_hpc.core.rundir import RunDirError

# A full disk or quota ends a command in one line; every product is written atomically, so a rerun of
# the same command, once there is space, resumes with nothing half-written counted.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

COMMAND_MODULES = tuple(f"dream_hpc.cli.{name}" for name in (
    "versions", "refkit", "cache", "catalog", "plan", "params", "survey", "run", "mosaic", "status",
    "provenance", "slurm", "report"))


def build_parser() -> argparse.ArgumentParser:
    import dream_hpc

    parser = argparse.ArgumentParser(prog="dream-hpc", description=dream_hpc.__doc__)
    parser.add_argument("--version", action="version", version=f"dream-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError, RunDirError) as e:
        print(f"dream-hpc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _NO_SPACE and e.errno != errno.EROFS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        fix = ("make the directory writable or choose another --out" if e.errno == errno.EROFS else
               "free space (or use another --out)")
        # h5py's strerror is a multi-line HDF5 report: the one line says what errno means
        print(f"dream-hpc {args.command}: error: {where}{os.strerror(e.errno)}; {fix}, then rerun the same command "
              "(nothing already finished is lost)", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"dream-hpc {args.command}: error: {e.filename or e}: not found (check the path)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dream-hpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
