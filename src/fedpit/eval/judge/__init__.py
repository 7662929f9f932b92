"""LLM-as-judge scoring of generated answers and its backends."""
