"""Evaluation: utility metrics, judges, privacy attacks, on models of a run."""
