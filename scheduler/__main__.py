"""``python -m scheduler``: see :mod:`scheduler.cli`."""

from scheduler.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
