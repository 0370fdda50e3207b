"""Backends that run pipeline stages with the GPU tools instead of the native CPU code.

``opd.backends.choice`` reads the config's ``backends:`` / ``stacks:`` (which tool runs a stage,
where its environment lives, how many GPUs a job needs). Per tool:

* vLLM (``generation: vllm``): ``vllm_worker`` runs in the vLLM stack; ``vllm_client`` drives it
  from the core env (``opd.generation.VLLMGenerator`` wraps it).
* LLaMA-Factory (``sft: llamafactory``): ``llamafactory`` writes its inputs, runs
  ``llamafactory-cli train`` and assembles the checkpoint.
* verl (``train: verl``): ``verl`` turns an experiment into a ``verl.trainer.main_ppo`` command;
  ``verl_ext`` is the module verl imports in every worker (the paper's estimators and top-k
  losses); ``verl_reward`` is the reward-function file; ``verl_run`` runs verl and converts its
  checkpoints and logs; ``verl_compose_check`` composes a command offline (tests).
"""
