r"""The outside module verl imports in every worker: the paper's estimators and top-k OPD losses.

verl 0.9.1 imports it (a) in the driver through ``VERL_USE_EXTERNAL_MODULES=opd.train.verl.ext``
(read by ``verl/__init__.py``) and (b) in every worker that builds the model config through
``actor_rollout_ref.model.external_lib=opd.train.verl.ext`` (``HFModelConfig.__post_init__``
calls ``import_external_libs``).  ``opd.train.verl.command.verl_command`` sets (b); ``verl_env`` gives (a).
Importing it again (or reloading it) is harmless: a name already registered by this module is
skipped, a name registered by someone else raises ``ValueError``.  Where verl is not installed
(the core venv: tests, ``benchmarks/verl_topk_approx.py``) importing it registers nothing and
gives the pure functions (``teacher_topk_details``, ``approx_topk_details``, ``topk_token_outputs``).

Registered here:

* Advantage estimators (``verl.trainer.ppo.core_algos.register_adv_est``), with verl's signature
  ``fn(token_level_rewards [B, L], response_mask [B, L], config=AlgoConfig, index=uids [B], **kw)
  -> (advantages [B, L], returns [B, L])``, computed by ``opd.objectives`` with one candidate
  (M = 1) on verl's dense token rewards:

  - ``token_reward_direct``:  A[b, l] = r[b, l] * mask[b, l];
  - ``token_reward_direct_plus_grpo``:  A = direct + w * grpo, the GRPO term on the outcome
    o_b = sum_l r[b, l] mask[b, l] grouped by ``index`` (normalised by the group std when
    ``config.norm_adv_by_std_in_grpo``); w = ``config.pf_ppo["opd_grpo_outcome_weight"]`` if
    present, else 1.

  For users whose reward function puts dense per-token rewards in ``token_level_rewards``.  The
  commands of ``opd.train.verl.command`` do not route OPD rewards through them: verl computes the
  teacher term inside the actor's distillation loss, and the GRPO term through verl's own
  ``grpo`` (identical math: unbiased std, eps 1e-6, singleton groups mean 0 / std 1).

* Distillation losses (``verl.trainer.distillation.losses.register_distillation_loss`` with
  ``DistillationLossSettings(names=[...], use_topk=True)``) named ``opd_<strategy>_<weight_mode>``
  for strategy ``only_tch`` and ``intersection`` and every weight mode (exact), and
  ``opd_<strategy>_<weight_mode>_approx_k<k>`` for ``only_stu`` / ``union`` /
  ``union-intersection``, every weight mode and every k in ``APPROX_TOPK_SIZES`` (approximate:
  ``approx_topk_details`` on the teacher's top-K', K' = the teacher columns verl passes; all 72
  names exist up front because verl registers names at import).  verl calls a loss as
  ``fn(config=ActorConfig, distillation_config=DistillationConfig, model_output=dict,
  data=TensorDict) -> (per-token losses [B, R], metrics)``.  For top-k losses verl computes the
  per-token values in a *logits processor* (``compute_topk_loss``, called with the student's
  temperature-scaled logits ``[1, nnz, V]`` and the teacher's nested ``teacher_ids`` /
  ``teacher_logprobs`` ``[nnz, k]``) that 0.9.1 hard-wires to ``forward_kl_topk``; this module
  wraps that function so that, for the names above only, it returns the paper's per-token
  surrogate instead (every other loss mode goes to verl's original).  Per position:

      candidates, valid, weights w, rewards r_c = -(S[c] - T[c]) w_c      (opd.objectives.topk;
                                       approx_topk_details for the ``_approx_k<k>`` names)
      loss = sum_c vanilla_ppo(logp_new = S[c], logp_old = S[c].detach(), A_c = r_c.detach())

  i.e. the native trainer's per-candidate PPO loss at ratio 1 (one optimiser step per rollout
  batch, which ``verl_command`` enforces); the registered loss returns it per token and verl
  aggregates it with the actor's ``loss_agg_mode`` (``use_policy_gradient=false``,
  ``loss_max_clamp=null``), adding verl's task loss when ``use_task_rewards=true``.
"""
from __future__ import annotations

import importlib.util
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from opd.train.verl.command import APPROX_TOPK_LOSSES, SUPPORTED_TOPK_STRATEGIES, TOPK_LOSSES
from opd.objectives import OPDConfig, TOKEN_LOSSES, candidate_weights, token_reward_direct, \
    token_reward_direct_plus_grpo
from opd.objectives.topk import TopkDetails, candidates, check_names, floor_teacher, isin_rows

_MARK = "_opd_verl_ext"


# ----------------------------------------------------------------------------- pure math
def teacher_topk_details(student_logp: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
                         strategy: str, weight_mode: str) -> TopkDetails:
    """``opd.objectives.topk_details`` when only the teacher's own top-k is known.

    student_logp [..., V] (log_softmax of the temperature-scaled student logits), teacher_ids /
    teacher_logp [..., k] (the teacher's top-k).  Equals ``topk_details(S, T, k, strategy,
    weight_mode)`` for ``strategy`` in ``SUPPORTED_TOPK_STRATEGIES`` (up to tie-breaking in the
    teacher's top-k), because those strategies read T only at the teacher's top-k ids.
    """
    if strategy not in SUPPORTED_TOPK_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} needs teacher log-probs outside the teacher's top-k; "
                         f"supported: {SUPPORTED_TOPK_STRATEGIES}")
    S = student_logp
    t_ids = teacher_ids.long()
    t_logp = teacher_logp.to(S.dtype)
    t_mem = torch.isfinite(t_logp)
    if strategy == "only_tch":
        ids, valid, t_c = t_ids, t_mem, t_logp
    else:  # intersection: the student's top-k ids that are (finite) members of the teacher's top-k
        s_val, ids = S.topk(t_ids.shape[-1], dim=-1)
        match = (ids.unsqueeze(-1) == t_ids.unsqueeze(-2)) & t_mem.unsqueeze(-2)   # [..., k, k]
        valid = torch.isfinite(s_val) & isin_rows(ids, t_ids, t_mem)
        t_c = torch.where(match, t_logp.unsqueeze(-2), torch.zeros_like(t_logp).unsqueeze(-2)).sum(-1)
    s_c = S.gather(-1, ids)
    valid = valid & torch.isfinite(s_c)
    zero = torch.zeros_like(s_c)
    s_c = torch.where(valid, s_c, zero)
    t_c = torch.where(valid, floor_teacher(t_c), zero)
    w = candidate_weights(s_c, t_c, valid, weight_mode, renormalise=True)
    rewards = torch.where(valid, -(s_c - t_c) * w, zero)
    return TopkDetails(ids, rewards, valid, w, s_c, t_c)


def teacher_tail_bound(teacher_logp: torch.Tensor) -> torch.Tensor:
    r"""Per position, an upper bound on the teacher log-prob of every id outside its returned top-K'.

    teacher_logp [..., K'] (any order; NaN counts as -inf) -> [...] in teacher_logp's float dtype:

        b = min(T_(K'), log(max(1 - \sum_{K'} exp T + eps (1 + log K'), tiny)))

    An id outside the top-K' has probability at most the K'-th largest returned one (T_(K')) and at
    most the mass the K' leave over.  The allowance eps (1 + log K') (eps of the input dtype) covers
    the rounding of the returned log-probs, so the residual term stays an upper bound when the
    leftover mass is below rounding (the sum is taken in float64); tiny is the float32 tiny, so
    the second term never goes below ``LOGP_FLOOR``.  It is -inf when fewer than K' returned
    log-probs are finite (then every other id has probability 0 too).
    """
    t = teacher_logp
    t = torch.where(torch.isnan(t), torch.full_like(t, float("-inf")), t)
    kp = t.shape[-1]
    eps = torch.finfo(t.dtype if t.is_floating_point() else torch.float32).eps
    left = 1.0 - t.double().exp().sum(-1) + eps * (1.0 + math.log(kp))
    tail = left.clamp_min(torch.finfo(torch.float32).tiny).log()
    return torch.minimum(t.double().amin(-1), tail).to(t.dtype if t.is_floating_point() else torch.float32)


def _approx_details(student_logp: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor, k: int,
                    strategy: str, weight_mode: str) -> tuple[TopkDetails, torch.Tensor]:
    """``approx_topk_details`` plus ``bounded`` [..., M] bool: valid candidates whose T is the bound."""
    check_names(strategy, weight_mode)
    S = student_logp
    if teacher_ids.shape != teacher_logp.shape or teacher_ids.shape[:-1] != S.shape[:-1]:
        raise ValueError(f"teacher_ids {tuple(teacher_ids.shape)} / teacher_logp {tuple(teacher_logp.shape)} "
                         f"must be [..., K'] with ... = student_logp's {tuple(S.shape[:-1])}")
    kp, V = teacher_ids.shape[-1], S.shape[-1]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(kp, V):
        raise ValueError(f"k must be an int in [1, min(K'={kp}, V={V})], got {k!r}")
    neg_inf = float("-inf")
    t_all = teacher_logp.to(S.dtype)
    t_all = torch.where(torch.isnan(t_all), torch.full_like(t_all, neg_inf), t_all)
    # the K' sorted by log-prob, descending (vLLM's order is not relied on); the teacher's top-k
    # is the first k of them
    t_sorted, order = t_all.sort(dim=-1, descending=True, stable=True)
    ids_sorted = teacher_ids.long().gather(-1, order)
    t_val, t_ids = t_sorted[..., :k], ids_sorted[..., :k]
    s_val, s_ids = S.topk(k, dim=-1)
    ids, valid = candidates(s_val, s_ids, t_val, t_ids, strategy)   # the same sets as topk_details
    # T at the candidates: look the ids up among the K' (sorted by id; a stable sort keeps, for a
    # repeated id, its largest log-prob first, which searchsorted finds) -- O(M log K'), no [..., V]
    by_id, perm = ids_sorted.sort(dim=-1, stable=True)
    t_by_id = t_sorted.gather(-1, perm)
    pos = torch.searchsorted(by_id.contiguous(), ids.contiguous()).clamp_max(kp - 1)
    known = by_id.gather(-1, pos) == ids
    bound = teacher_tail_bound(teacher_logp).to(S.dtype).unsqueeze(-1)
    t_c = torch.where(known, t_by_id.gather(-1, pos), bound.expand_as(pos))
    s_c = S.gather(-1, ids)
    valid = valid & torch.isfinite(s_c)
    zero = torch.zeros_like(s_c)
    s_c = torch.where(valid, s_c, zero)
    t_c = torch.where(valid, floor_teacher(t_c), zero)
    w = candidate_weights(s_c, t_c, valid, weight_mode, renormalise=strategy != "union-intersection")
    rewards = torch.where(valid, -(s_c - t_c) * w, zero)
    return TopkDetails(ids, rewards, valid, w, s_c, t_c), valid & ~known


def approx_topk_details(student_logp: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
                        k: int, strategy: str, weight_mode: str) -> TopkDetails:
    """``opd.objectives.topk_details(S, T, k, strategy, weight_mode)`` when only the teacher's top-K'
    (K' >= k) is known: the approximation of the verl backend's ``..._approx_k<k>`` losses.

    student_logp [..., V] (log_softmax of the temperature-scaled student logits); teacher_ids /
    teacher_logp [..., K'] the teacher's top-K' ids and log-probs, in any order.  The same
    candidate sets, membership (finite log-probs), validity, teacher floor, weights and
    renormalisation (none for union-intersection) as ``topk_details``, with

    * the teacher's top-k = the k largest of the K' returned log-probs;
    * T at a candidate = its returned log-prob where the id is among the K' (exact), else the
      per-position bound ``teacher_tail_bound`` (>= the true log-prob of every id outside the
      top-K'), then floored at ``LOGP_FLOOR`` like ``topk_details``.

    Hence: equal to ``topk_details`` when every candidate is among the K' (always for K' = V;
    always for only_tch / intersection, which read T only at the teacher's top-k); otherwise
    T is over-estimated exactly at the candidates outside the top-K', so for weight modes
    ``student_p`` / ``none`` (whose weights do not read T) each reward -(S - T) w there is >= the
    exact one and equal at every other candidate; ``teacher_p`` weights shift with the bound.
    Ties at the k-th (and K'-th) teacher log-prob may be broken differently than ``torch.topk``.
    Memory: no [..., V] teacher tensor; the lookup sorts [..., K'] and searches [..., M].
    Returns ``TopkDetails``, each field [..., M] (M = k, or 2k for union / union-intersection).
    """
    return _approx_details(student_logp, teacher_ids, teacher_logp, k, strategy, weight_mode)[0]


def topk_token_outputs(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logp: torch.Tensor,
                       strategy: str, weight_mode: str, clip_ratio_low: float = 0.2,
                       clip_ratio_high: float = 0.2, approx_k: Optional[int] = None) -> dict[str, torch.Tensor]:
    """Per-token outputs for the paper's top-k objective: ``distillation_losses`` (with gradient to
    ``student_logits``), ``opd_reward`` (sum of candidate rewards), ``opd_valid`` (valid candidates),
    ``student_mass`` / ``teacher_mass`` (probability mass on the valid candidates); each ``[...]``.
    With ``approx_k`` (the approximate losses): ``approx_topk_details`` with k = ``approx_k`` on the
    teacher's K' columns, plus ``opd_bounded`` (valid candidates whose T is the tail bound).

    student_logits [..., V] are already divided by the student temperature (verl does that).
    """
    S = F.log_softmax(student_logits.float(), dim=-1)
    out = {}
    if approx_k is None:
        d = teacher_topk_details(S, teacher_ids, teacher_logp, strategy, weight_mode)
        k = int(teacher_ids.shape[-1])
    else:
        d, bounded = _approx_details(S, teacher_ids, teacher_logp, approx_k, strategy, weight_mode)
        out["opd_bounded"] = bounded.to(S.dtype).sum(-1)
        k = approx_k
    # d.student_logp carries the gradient; the advantage and logp_old are detached
    cfg = OPDConfig(top_k=max(k, 1), strategy=strategy, weight_mode=weight_mode,
                    clip_ratio_low=clip_ratio_low, clip_ratio_high=clip_ratio_high)
    loss, _ = TOKEN_LOSSES.get("vanilla")(d.student_logp, d.student_logp.detach(), d.rewards.detach(),
                                          d.valid, cfg)
    vf = d.valid.to(S.dtype)
    return {
        "distillation_losses": loss,
        "opd_reward": d.rewards.detach().sum(-1),
        "opd_valid": vf.sum(-1),
        "student_mass": (d.student_logp.detach().exp() * vf).sum(-1),
        "teacher_mass": (d.teacher_logp.exp() * vf).sum(-1),
        **out,
    }


# ----------------------------------------------------------------------------- advantage estimators
def _cfg_get(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    getter = getattr(config, "get", None)
    if getter is not None:
        try:
            return getter(key, default)
        except Exception:  # noqa: BLE001 - dataclass configs without the key
            pass
    return getattr(config, key, default)


def _group_ids(index: Any, n: int, device: torch.device) -> torch.Tensor:
    if index is None:
        raise ValueError("token_reward_direct_plus_grpo needs `index` (the rollout group uids)")
    codes: dict[Any, int] = {}
    ids = [codes.setdefault(u if not isinstance(u, torch.Tensor) else u.item(), len(codes)) for u in list(index)]
    if len(ids) != n:
        raise ValueError(f"index has {len(ids)} entries for {n} rollouts")
    return torch.tensor(ids, dtype=torch.long, device=device)


def adv_token_reward_direct(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                            config: Any = None, index: Any = None, **kwargs: Any):
    """verl estimator: A = r * mask (the paper's token_reward_direct, M = 1); returns (A, A)."""
    r = token_level_rewards.unsqueeze(-1)
    a = token_reward_direct(r, torch.ones_like(r, dtype=torch.bool), response_mask, None, None, OPDConfig())
    a = a.squeeze(-1)
    return a, a


def adv_token_reward_direct_plus_grpo(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                      config: Any = None, index: Any = None, **kwargs: Any):
    """verl estimator: A = r * mask + w * grpo(sum_l r * mask, groups = index); returns (A, A)."""
    pf = _cfg_get(config, "pf_ppo", None) or {}
    w = float(pf.get("opd_grpo_outcome_weight", 1.0)) if hasattr(pf, "get") else 1.0
    cfg = OPDConfig(norm_adv_by_std=bool(_cfg_get(config, "norm_adv_by_std_in_grpo", True)),
                    grpo_outcome_weight=w)
    mask = response_mask.to(token_level_rewards.dtype)
    outcome = (token_level_rewards * mask).sum(-1)
    groups = _group_ids(index, token_level_rewards.shape[0], token_level_rewards.device)
    r = token_level_rewards.unsqueeze(-1)
    a = token_reward_direct_plus_grpo(r, torch.ones_like(r, dtype=torch.bool), response_mask, outcome,
                                      groups, cfg).squeeze(-1)
    return a, a


# ----------------------------------------------------------------------------- distillation loss
def opd_topk_distillation_loss(config: Any, distillation_config: Any, model_output: dict, data: Any):
    """verl distillation loss ``opd_<strategy>_<weight_mode>``: the per-token surrogate computed by the
    (wrapped) logits processor, as ``[B, R]``, plus mean reward / valid-candidate metrics."""
    from verl.workers.utils.padding import no_padding_2_padding

    losses = no_padding_2_padding(model_output["distillation_losses"], data)
    mask = data["response_mask"]
    mask = (mask.to_padded_tensor(False) if mask.is_nested else mask).bool()
    metrics = {}
    for key in ("opd_reward", "opd_valid", "student_mass", "teacher_mass", "opd_bounded"):
        if key in model_output:
            v = no_padding_2_padding(model_output[key], data)
            metrics[f"distillation/{key}"] = float(v[mask].float().mean().item()) if mask.any() else 0.0
    return losses, metrics


def _topk_logits_processor(orig):
    def compute_topk_loss(config, distillation_config, data, student_logits, data_format="thd"):
        loss_cfg = distillation_config.distillation_loss
        if loss_cfg.loss_mode not in TOPK_LOSSES and loss_cfg.loss_mode not in APPROX_TOPK_LOSSES:
            return orig(config, distillation_config, data, student_logits, data_format)
        if config.strategy not in ("fsdp", "fsdp2"):
            raise ValueError(f"{loss_cfg.loss_mode}: the opd top-k losses run on the fsdp/fsdp2 "
                             f"actor only, got strategy {config.strategy!r}; set "
                             "actor_rollout_ref.actor.strategy=fsdp2 or use strategy only_tch "
                             "with verl's own forward_kl_topk")
        if loss_cfg.loss_mode in TOPK_LOSSES:
            (strategy, weight_mode), approx_k = TOPK_LOSSES[loss_cfg.loss_mode], None
        else:
            strategy, weight_mode, approx_k = APPROX_TOPK_LOSSES[loss_cfg.loss_mode]
        t_logp, t_ids = data["teacher_logprobs"], data["teacher_ids"]
        if t_logp.is_nested:
            t_logp, t_ids = t_logp.values().unsqueeze(0), t_ids.values().unsqueeze(0)
        from verl.utils.ulysses import get_ulysses_sequence_parallel_world_size, slice_input_tensor
        if get_ulysses_sequence_parallel_world_size() > 1:
            t_logp, t_ids = slice_input_tensor(t_logp, dim=1), slice_input_tensor(t_ids, dim=1)
        assert t_logp.shape[:2] == t_ids.shape[:2] == student_logits.shape[:2]
        if approx_k is not None and t_ids.shape[-1] < approx_k:
            raise ValueError(f"{loss_cfg.loss_mode}: the teacher returned {t_ids.shape[-1]} log-probs per "
                             f"position, fewer than top_k={approx_k}; set distillation_loss.topk >= {approx_k}")
        return topk_token_outputs(student_logits, t_ids, t_logp, strategy, weight_mode,
                                  loss_cfg.clip_ratio_low, loss_cfg.clip_ratio_high, approx_k=approx_k)

    setattr(compute_topk_loss, _MARK, True)
    compute_topk_loss.__wrapped__ = orig
    return compute_topk_loss


# ----------------------------------------------------------------------------- registration
def _ours(fn: Any) -> bool:
    return getattr(fn, _MARK, False) or getattr(fn, "__module__", None) == __name__


def register() -> None:
    """Register everything with verl (idempotent)."""
    from verl.trainer.distillation import losses as L
    from verl.trainer.ppo import core_algos

    for name, fn in (("token_reward_direct", adv_token_reward_direct),
                     ("token_reward_direct_plus_grpo", adv_token_reward_direct_plus_grpo)):
        have = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if have is None:
            core_algos.register_adv_est(name)(fn)
        elif not _ours(have):
            raise ValueError(f"verl advantage estimator {name!r} is already registered by {have!r}")

    all_names = list(TOPK_LOSSES) + list(APPROX_TOPK_LOSSES)
    names = [n for n in all_names if n not in L.DISTILLATION_LOSS_REGISTRY]
    for n in all_names:
        have = L.DISTILLATION_LOSS_REGISTRY.get(n)
        if have is not None and not _ours(have):
            raise ValueError(f"verl distillation loss {n!r} is already registered by {have!r}")
    if names:
        L.register_distillation_loss(L.DistillationLossSettings(names=names, use_topk=True))(
            opd_topk_distillation_loss)

    if not getattr(L.compute_topk_loss, _MARK, False):
        L.compute_topk_loss = _topk_logits_processor(L.compute_topk_loss)


if importlib.util.find_spec("verl") is not None:   # without verl: the pure functions only
    register()
