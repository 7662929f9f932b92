"""The base model.

``resolve`` finds, downloads or converts it (GGUF → safetensors, cached) and ``prompts``
formats its prompts (chat or Alpaca template).
"""
