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
import importlib

#: Public name -> the submodule that defines it (imported on first use, so that importing
#: ``opd.objectives.config`` or ``.registry`` at DAG build loads no torch).
_WHERE = {
    'ADV_ESTIMATORS': 'registry',
    'KL_LOSS_TYPES': 'config',
    'LOGP_FLOOR': 'topk',
    'LOSS_AGG_MODES': 'config',
    'OPDConfig': 'config',
    'POLICY_LOSSES': 'registry',
    'Registry': 'registry',
    'STRATEGIES': 'config',
    'Scored': 'chunked',
    'TOKEN_LOSSES': 'registry',
    'TopkDetails': 'topk',
    'TopkRewards': 'topk',
    'WEIGHT_MODES': 'config',
    'agg_loss': 'losses',
    'candidate_weights': 'topk',
    'chunk_log_probs': 'chunked',
    'entropy_from_logp': 'mechanism',
    'grpo': 'advantages',
    'grpo_outcome_advantage': 'advantages',
    'kl_penalty': 'losses',
    'low_var_kl': 'losses',
    'mechanism_metrics': 'mechanism',
    'policy_loss_backward': 'chunked',
    'register_policy_loss': 'losses',
    'score_tokens': 'chunked',
    'token_mechanism_stats': 'mechanism',
    'token_reward_direct': 'advantages',
    'token_reward_direct_plus_grpo': 'advantages',
    'token_weights': 'losses',
    'topk_details': 'topk',
    'topk_rewards': 'topk',
    'vanilla_token_loss': 'losses',
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'opd.objectives' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_WHERE)
