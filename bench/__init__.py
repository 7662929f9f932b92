"""The performance benchmark of issue 4: ``python -m bench.run [--quick]``."""
