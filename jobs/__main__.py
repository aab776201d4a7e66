"""`python -m jobs demo` runs the demo; the operator CLI (`taatom-jobs`) has the rest."""

from ops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
