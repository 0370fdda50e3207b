"""Backends that run pipeline stages outside the native CPU code.

``opd.backends.verl`` turns an experiment's resolved training config into a
``python -m verl.trainer.main_ppo`` command (pure Python, no verl import);
``opd.backends.verl_ext`` is the module verl imports in every worker to register the
paper's estimators and losses; ``opd.backends.verl_reward`` is the reward-function file.
"""
