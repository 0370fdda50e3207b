"""The verl train backend: ``command`` (TrainConfig -> argv), ``ext`` (what verl imports in its
workers), ``reward`` (the reward-function file) and ``run`` (run verl, convert its outputs)."""
