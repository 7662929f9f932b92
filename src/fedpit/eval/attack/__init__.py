"""Training-data extraction and membership inference on a run's models."""
