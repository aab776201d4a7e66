"""Benchmarks: `python -m bench NAME [options]`. Each module `bench/NAME.py` has `main(argv) -> int`."""
