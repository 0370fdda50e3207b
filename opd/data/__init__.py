"""Data preparation: dataset adapters (``datasets``), dedup against benchmarks (``dedup``),
sentence embeddings (``embeddings``) and teacher-aligned prompt selection (``selection``)."""
