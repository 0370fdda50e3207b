r"""The TRL backend of the ``train`` stage: a ``TrainConfig`` -> which TRL trainer runs it, how.

Pure Python (no TRL import), so the DAG-time check and its tests need no TRL stack. The runner
(``opd.train.trl.runner``, in the TRL stack) reads the JSON ``plan`` written from here.

Two OPD objectives run, each with the TRL trainer that computes it as the native trainer does
(one optimiser step per rollout batch, so every PPO ratio of the native trainer is 1):

* **full-vocabulary reverse KL** (``objective.top_k`` = the vocabulary, ``weight_mode:
  student_p``): ``trl.DistillationTrainer`` with ``beta=1``. Per response token it takes
  KL(p_s || p_t) over the whole vocabulary, both at ``temperature``; the native trainer's
  per-token loss sum_c -p_s(c) (S_c - T_c) at ratio 1 has the same value and gradient.
* **sampled-token OPD** (``top_k: 0``): ``trl.experimental.iw_opd.IWOPDTrainer`` with
  ``distillation_objective="iw_opd"``, ``iw_opd_gamma=0`` (every importance weight 1) and
  ``lmbda=1``: per token -log p_s(y) * (T_y - S_y).detach(), the native trainer's advantage
  ``-(S_y - T_y)`` times the sampled token's log-prob: the same gradient.

**Loss scaling: the token mean over the rollout batch.** Both trainers divide the summed
per-token loss by ``num_items_in_batch``. transformers counts it from the dataloader's labels,
before on-policy generation replaces the completions: for TRL's ``GKDTrainer`` that is the
dataset's placeholder answers (162 tokens against 2,810 generated in the 2026-12-04 diagnosis,
an 18x larger step), for ``IWOPDTrainer`` the prompt-only labels (0). ``DistillationTrainer``
(TRL 1.16) replaces it by the count of generated tokens itself; for ``IWOPDTrainer`` the
runner does the same. So the loss is sum over the batch's response tokens / their number, over
all micro-batches of the step: the native trainer's ``loss_agg_mode: token-mean`` (exactly when
one micro-batch holds the batch; with several, native averages the micro-batches' token means).

Keys (``docs/trl.md`` has the table): ``steps`` -> ``max_steps``; ``lr``, ``lr_warmup_steps`` ->
``learning_rate``, ``warmup_steps`` (constant, or ``constant_with_warmup``); ``weight_decay``, ``adam_eps`` -> ``adam_epsilon`` (AdamW, betas 0.9 and
0.999 as native); ``grad_clip`` -> ``max_grad_norm``; ``prompts_per_step`` x ``n_samples`` -> one
generation batch of that many prompts, each repeated ``n_samples`` times; ``micro_batch_size`` ->
``per_device_train_batch_size`` with ``gradient_accumulation_steps`` = batch / micro;
``max_new_tokens`` -> ``max_completion_length``; ``student_temperature`` (= ``teacher_temperature``)
-> ``temperature`` (sampling and both distributions in the loss); top-p 1, no top-k sampling;
``seed`` -> ``seed``; ``enable_thinking`` -> the chat template's ``enable_thinking``;
``save_every`` -> the checkpoint steps. Everything TRL cannot honour is refused (``refusals``).
"""
from __future__ import annotations

from typing import Optional

from opd.train.config import TrainConfig

#: plan["trainer"] -> the TRL class that runs it.
TRAINERS = {"full_vocab": "trl.DistillationTrainer", "sampled_token": "trl.experimental.iw_opd.IWOPDTrainer"}
#: The alternative named by every refusal.
ALTERNATIVE = "use backends.train: native, which runs every objective of the project"


class UnsupportedByTRL(ValueError):
    """A training setting the TRL backend cannot run as the native trainer does."""


def _refuse(msg: str) -> UnsupportedByTRL:
    return UnsupportedByTRL(f"TRL backend: {msg}; {ALTERNATIVE}")


def micro_batches(train: TrainConfig) -> tuple[int, int]:
    """(``per_device_train_batch_size``, ``gradient_accumulation_steps``): sequences per forward
    and forwards per optimiser step; their product is ``prompts_per_step * n_samples``."""
    batch = train.prompts_per_step * train.n_samples
    micro = min(train.micro_batch_size, batch)
    if batch % micro:
        raise _refuse(f"micro_batch_size={train.micro_batch_size} must divide the batch of "
                      f"prompts_per_step * n_samples = {batch} sequences (TRL splits each rollout "
                      "batch into equal gradient-accumulation slices)")
    return micro, batch // micro


def objective_kind(train: TrainConfig, vocab_size: Optional[int]) -> str:
    """``"full_vocab"`` or ``"sampled_token"`` (a key of ``TRAINERS``) for ``train``, or raise
    ``UnsupportedByTRL`` naming the key TRL cannot honour and the native backend.

    ``vocab_size``: the student's vocabulary (``top_k`` at least this is the whole vocabulary;
    None when unknown, then only ``top_k: 0`` passes)."""
    o = train.objective
    if o.top_k == 0:
        return "sampled_token"
    if vocab_size is None or o.top_k < vocab_size:
        size = "unknown here" if vocab_size is None else f"{vocab_size} tokens"
        raise _refuse(f"objective.top_k={o.top_k} is a top-k strategy ({o.strategy}, {o.weight_mode}) below "
                      f"the vocabulary ({size}); TRL's trainers take the divergence over the whole "
                      "vocabulary (top_k = the vocabulary) or the sampled token (top_k: 0) only")
    if o.weight_mode != "student_p":
        raise _refuse(f"objective.weight_mode={o.weight_mode!r} over the whole vocabulary is not a KL "
                      "divergence; only student_p gives the reverse KL that TRL computes")
    if o.strategy == "union-intersection":
        raise _refuse("objective.strategy union-intersection over the whole vocabulary is the empty set")
    return "full_vocab"


def refusals(train: TrainConfig, vocab_size: Optional[int]) -> list[str]:
    """Why ``train`` cannot run on TRL, one message per problem (empty: it can)."""
    o, out = train.objective, []
    if train.method != "opd":
        return [f"method {train.method!r}: this backend runs OPD only (TRL's GRPOTrainer is not wired "
                "here; backends.train: verl runs GRPO on GPUs)"]
    try:
        objective_kind(train, vocab_size)
    except UnsupportedByTRL as err:
        out.append(str(err).removeprefix("TRL backend: ").removesuffix(f"; {ALTERNATIVE}"))
    checks = [
        (train.teacher_prompt != "student", "teacher_prompt: own (TRL's teacher scores the student's "
         "token ids; it cannot re-render the prompt with the teacher's chat template)"),
        (train.ppo_epochs != 1, f"ppo_epochs={train.ppo_epochs}: TRL's distillation trainers take one "
         "optimiser step per rollout batch"),
        (train.mini_batches_per_step() > 1,
         f"mini_batch_size={train.mini_batch_size}: TRL's distillation trainers take one optimiser step "
         "per rollout batch (set it to null, or at least prompts_per_step * n_samples)"),
        (o.student_temperature != o.teacher_temperature,
         f"objective.student_temperature={o.student_temperature} != teacher_temperature="
         f"{o.teacher_temperature}: TRL has one temperature, for sampling and for both distributions"),
        (o.adv_estimator != "token_reward_direct", f"objective.adv_estimator={o.adv_estimator!r}: TRL's "
         "distillation losses are the teacher term alone (token_reward_direct)"),
        (o.policy_loss != "vanilla", f"objective.policy_loss={o.policy_loss!r}: only vanilla (at ratio 1 "
         "it is the plain policy gradient TRL takes)"),
        (o.loss_agg_mode != "token-mean", f"objective.loss_agg_mode={o.loss_agg_mode!r}: TRL takes the "
         "token mean over the rollout batch"),
        (o.use_kl_loss, "objective.use_kl_loss: TRL's distillation trainers have no KL penalty to the "
         "initial student"),
        (o.tail_bucket, "objective.tail_bucket is a top-k device; TRL takes the whole vocabulary"),
    ]
    out += [msg for bad, msg in checks if bad]
    try:
        micro_batches(train)
    except UnsupportedByTRL as err:
        out.append(str(err).removeprefix("TRL backend: ").removesuffix(f"; {ALTERNATIVE}"))
    return out


def check_supported(train: TrainConfig, vocab_size: Optional[int]) -> str:
    """The ``objective_kind`` of ``train``, or ``UnsupportedByTRL`` listing every refusal."""
    problems = refusals(train, vocab_size)
    if problems:
        raise _refuse("; ".join(problems))
    return objective_kind(train, vocab_size)


def check_config(config: dict, exp: str) -> None:
    """The registry's DAG-time check of experiment ``exp`` of the workflow ``config``: the
    vocabulary is read as ``opd.checks`` reads it (the world's tokenizer or ``config.json``)."""
    from opd.checks import model_vocab
    from opd.experiments import train_config

    train = train_config(config, exp)
    size = model_vocab(config, config["experiments"][exp]["student"])[0] if train.objective.top_k else None
    check_supported(train, size)


def trainer_args(train: TrainConfig, kind: str, options: Optional[dict], output_dir: str) -> dict:
    """Keyword arguments of the TRL config class of ``kind`` (``DistillationConfig`` or
    ``IWOPDConfig``). ``options``: ``backends.trl`` (``gpus`` 0 or 1, ``bf16``)."""
    o, opts = train.objective, dict(options or {})
    micro, accumulation = micro_batches(train)
    gpus = int(opts.get("gpus", 0))
    args = {
        "output_dir": str(output_dir), "max_steps": train.steps, "seed": train.seed,
        "per_device_train_batch_size": micro, "gradient_accumulation_steps": accumulation,
        "learning_rate": float(train.lr), "warmup_steps": train.lr_warmup_steps,
        "lr_scheduler_type": "constant_with_warmup" if train.lr_warmup_steps else "constant",
        "weight_decay": float(train.weight_decay), "adam_beta1": 0.9, "adam_beta2": 0.999,
        "adam_epsilon": float(train.adam_eps), "optim": "adamw_torch", "max_grad_norm": float(train.grad_clip),
        "temperature": o.student_temperature, "top_p": 1.0, "top_k": 0,
        "max_completion_length": train.max_new_tokens,
        "use_cpu": gpus == 0, "bf16": bool(opts.get("bf16", False)), "fp16": False,
        "gradient_checkpointing": False, "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "dataloader_num_workers": 0,
    }
    if kind == "full_vocab":
        args.update({"beta": 1.0, "shuffle_dataset": True})
        if train.enable_thinking is not None:
            args["chat_template_kwargs"] = {"enable_thinking": train.enable_thinking}
    else:
        args.update({"distillation_objective": "iw_opd", "iw_opd_gamma": 0.0, "lmbda": 1.0, "beta": 1.0,
                     "num_generations": train.n_samples, "max_length": None, "disable_dropout": False})
    return args


def make_plan(train: TrainConfig, kind: str, paths: dict, options: Optional[dict] = None) -> dict:
    """The JSON the runner reads. ``paths``: ``student``, ``teacher``, ``prompts`` (a JSONL file
    of ``{"prompt": [messages]}`` rows), ``work`` (TRL's output folder), ``saves`` (where the
    runner saves ``step_NNNN``), ``log`` (TRL's per-step logs, JSONL) and ``rollouts`` (the
    generated responses, JSONL, graded afterwards by ``opd.train.trl.run``)."""
    missing = [k for k in ("student", "teacher", "prompts", "work", "saves", "log", "rollouts") if not paths.get(k)]
    if missing:
        raise ValueError(f"make_plan: paths is missing {missing}")
    return {"trainer": kind, "trainer_class": TRAINERS[kind], "paths": {k: str(v) for k, v in paths.items()},
            "args": trainer_args(train, kind, options, paths["work"]),
            "prompts_per_step": train.prompts_per_step, "n_samples": train.n_samples,
            "enable_thinking": train.enable_thinking, "checkpoint_steps": train.checkpoint_steps()}
