"""Run one benchmark by name: `python -m bench NAME [options]`; `python -m bench` lists them."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

# Modules of this package that support the benchmarks rather than being one.
HELPERS = frozenset({"harness", "measure", "raw_worker", "stack_worker", "celery_app"})


def available() -> list[str]:
    here = Path(__file__).parent
    names = (m.name for m in pkgutil.iter_modules([str(here)]))
    return sorted(n for n in names if not n.startswith("_") and n not in HELPERS)


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] not in names:
        print("usage: python -m bench NAME [options]\nbenchmarks: " + ", ".join(names))
        return 2 if argv else 0
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
