"""Run directories (``rundir``) and resumable grids of runs (``sweep``)."""
