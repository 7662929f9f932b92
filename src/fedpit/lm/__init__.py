"""Language-model operations on a base model with adapters.

``runtime`` holds the base model and its adapters per process, ``batching`` tokenises and
batches, ``scoring`` scores, ``generation`` (the interface) and ``batched_generation``
(Hugging Face) generate, ``train`` and ``distill`` train, ``fingerprint`` identifies the
base model a node holds, ``base_cache`` keeps the base model's outputs across runs.
"""
