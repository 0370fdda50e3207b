"""The TRL train backend: ``plan`` (TrainConfig -> TRL trainer settings, the refusals; no TRL
import), ``runner`` (runs TRL in the TRL stack's interpreter; imports nothing from ``opd``) and
``run`` (the registry's entry: write the plan, run the runner, collect checkpoints and metrics)."""
