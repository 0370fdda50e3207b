"""On-policy distillation pipeline library."""
