"""Grading with the paper's protocol: ``extract`` (last box), ``pool`` (bounded math-verify
workers), ``verify`` (``is_correct``, ``grade``), ``metrics`` (avg@n, pass@k, ...) and
``verifier`` (an optional judge model for rule-failed answers)."""
