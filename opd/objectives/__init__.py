"""The OPD objective family: top-k candidate rewards, advantage estimators, policy losses,
the chunked (no full logits) scoring / backward path and mechanism metrics.  Pure torch.

Typical trainer use::

    from opd.objectives import OPDConfig, ADV_ESTIMATORS, score_tokens, policy_loss_backward, mechanism_metrics
    cfg = OPDConfig.from_dict(yaml_cfg["opd"])
    scored = score_tokens(h_s, student.lm_head.weight, h_t, teacher.lm_head.weight, tokens, mask, cfg, cfg.chunk_size)
    adv = ADV_ESTIMATORS.get(cfg.adv_estimator)(scored.rewards, scored.valid, mask, outcome, group_ids, cfg)
    stats = policy_loss_backward(h_s, student.lm_head.weight, tokens, mask, scored, adv, cfg, cfg.chunk_size)
    stats.update(mechanism_metrics(scored.stats, mask))

Tests: ``.venv/bin/pytest tests/test_objectives.py tests/test_chunked.py -q``.
Memory benchmark: ``.venv/bin/python benchmarks/chunked_memory.py``.
"""
from .advantages import (ADV_ESTIMATORS, grpo, grpo_outcome_advantage, token_reward_direct,
                         token_reward_direct_plus_grpo)
from .chunked import Scored, chunk_log_probs, policy_loss_backward, score_tokens
from .config import KL_LOSS_TYPES, LOSS_AGG_MODES, STRATEGIES, WEIGHT_MODES, OPDConfig
from .losses import (POLICY_LOSSES, TOKEN_LOSSES, agg_loss, kl_penalty, low_var_kl, register_policy_loss,
                     token_weights, vanilla_token_loss)
from .mechanism import entropy_from_logp, mechanism_metrics, token_mechanism_stats
from .registry import Registry
from .topk import LOGP_FLOOR, TopkDetails, TopkRewards, candidate_weights, topk_details, topk_rewards

__all__ = [
    "ADV_ESTIMATORS", "KL_LOSS_TYPES", "LOGP_FLOOR", "LOSS_AGG_MODES", "OPDConfig", "POLICY_LOSSES",
    "Registry", "STRATEGIES", "Scored", "TOKEN_LOSSES", "TopkDetails", "TopkRewards", "WEIGHT_MODES",
    "agg_loss", "candidate_weights", "chunk_log_probs", "entropy_from_logp", "grpo", "grpo_outcome_advantage",
    "kl_penalty", "low_var_kl", "mechanism_metrics", "policy_loss_backward", "register_policy_loss",
    "score_tokens", "token_mechanism_stats", "token_reward_direct", "token_reward_direct_plus_grpo",
    "token_weights", "topk_details", "topk_rewards", "vanilla_token_loss",
]
