"""The `dream-hpc` command: one subcommand registry; each concern module adds its own commands.

A module listed in COMMAND_MODULES defines ``add_commands(subparsers)``; each subcommand sets
``func`` (taking the parsed args, returning an exit code). Modules import jwst and Mirage inside
their functions, so `dream-hpc --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dream_hpc import __version__
from dream_hpc.config import ConfigError

COMMAND_MODULES = (
    "dream_hpc.versions",
    "dream_hpc.refkit.commands",
    "dream_hpc.cache",
    "dream_hpc.catalog",
    "dream_hpc.plan",
    "dream_hpc.params",
    "dream_hpc.survey",
    "dream_hpc.engine",
    "dream_hpc.mosaic",
    "dream_hpc.status",
    "dream_hpc.provenance",
    "dream_hpc.slurm",
)


class UserError(RuntimeError):
    """An error the user can fix; printed as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    import dream_hpc

    parser = argparse.ArgumentParser(prog="dream-hpc", description=dream_hpc.__doc__)
    parser.add_argument("--version", action="version", version=f"dream-hpc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # module not written yet: its commands are absent
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UserError) as e:
        print(f"dream-hpc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"dream-hpc {args.command}: error: {e.filename or e}: not found (check the path)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dream-hpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
