"""Grading with the paper's protocol: ``extract`` (last box), ``numeric`` (numbers compared at
their own scale), ``pool`` (bounded math-verify
workers), ``verify`` (``is_correct``, ``grade``), ``metrics`` (avg@n, pass@k, ...) and
``judge`` (an optional judge model for rule-failed answers, config ``grading.verifier``)."""
