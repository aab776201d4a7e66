"""The `taatom-jobs` command: the operator's entry point.

Exit codes: 0 success, 1 a command ran but its work failed, 2 usage error,
78 configuration error (a setting is invalid).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taatom-jobs", description="Taatom background jobs: operator commands."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run sample jobs through the full stack in embedded mode")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imports are deferred so that `--help` and usage errors need no configuration.
    from jobs.settings import SettingsError

    try:
        if args.command == "demo":
            from jobs.demo import run_demo

            return run_demo()
    except SettingsError as exc:
        print(f"taatom-jobs: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_USAGE
