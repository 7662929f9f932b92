"""The performance benchmark: ``python -m bench.run [--quick]``."""
