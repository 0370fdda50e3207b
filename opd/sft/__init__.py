"""SFT cold start on teacher rollouts: ``native`` (a torch loop, the CPU default) and
``llamafactory`` (``llamafactory-cli train`` in its own stack); ``config.py`` holds ``SFTConfig``."""
