"""FedPIT: privacy-preserving, few-shot federated instruction tuning of LLMs."""

__version__ = "0.1.0"
