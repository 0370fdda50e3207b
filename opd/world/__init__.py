"""The tiny world: synthetic problems (``problems``), a local tokenizer and tiny Qwen3 models
pretrained from scratch (``models``)."""
