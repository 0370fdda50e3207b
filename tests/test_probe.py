"""The probe stage: response selection, exactness against float64 full logits on real tiny
checkpoints, and agreement with the trainer's statistics on the same sequences."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from opd.objectives import OPDConfig, mechanism_metrics, token_mechanism_stats, topk_rewards
from opd.probe import TOKEN_COLUMNS, encode_rows, score_rows, select_responses, summarise


def test_select_responses_is_seeded_and_bounded():
    n = [10, 30, 5, 20, 40, 15]
    a = select_responses(n, 50, seed=3)
    assert a == select_responses(n, 50, seed=3) and a == sorted(a)
    assert sum(n[i] for i in a) <= 50 and len(a) >= 2
    assert select_responses(n, None, seed=3) == list(range(6))
    assert len(select_responses(n, 1, seed=0)) == 1                     # always one response
    assert {tuple(select_responses(n, 50, seed=s)) for s in range(20)} != {tuple(a)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models, tiny_tokenizer, tiny_problems):
    """A student checkpoint, a teacher, a benchmark and the student's real evaluation generations."""
    from opd.checkpoint import save_hf
    from opd.stages.evaluate import eval_generate
    from opd.world.problems import to_frame

    d = tmp_path_factory.mktemp("probe")
    student, teacher = (copy.deepcopy(m) for m in tiny_models)
    with torch.no_grad():   # sharpen the untrained models, so top-k sets are not decided by rounding
        for m in (student, teacher):
            m.get_output_embeddings().weight.mul_(10)
    save_hf(student, tiny_tokenizer, d / "student")
    save_hf(teacher, tiny_tokenizer, d / "teacher")
    to_frame(tiny_problems["eval"][:6], "eval").to_parquet(d / "bench.parquet")
    eval_generate(model=str(d / "student"), benchmark=str(d / "bench.parquet"),
                  eval={"n": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24},
                  seed=0, generations=str(d / "gen.parquet"))
    return d


def run_probe(d, cfg: OPDConfig, max_tokens=None, name="p"):
    from opd.stages.probe import probe
    probe(checkpoint=str(d), subdir="student", teacher=str(d / "teacher"),
          generations=str(d / "gen.parquet"), benchmark=str(d / "bench.parquet"),
          summary=str(d / f"{name}.json"), tokens=str(d / f"{name}.parquet"), objective=cfg.to_dict(),
          probe={"max_tokens": max_tokens, "batch_size": 5}, seed=0, exp="opd", model="student",
          bench="bench")
    return pd.read_parquet(d / f"{name}.parquet"), json.loads((d / f"{name}.json").read_text())


def float64_reference(d, cfg: OPDConfig, gens: pd.DataFrame) -> dict[int, dict[str, torch.Tensor]]:
    """Per response (by generation row): every statistic from float64 full logits, one sequence at a time."""
    from opd.generation.hf import load_model, load_tokenizer
    from opd.io import flat_view

    tok = load_tokenizer(d / "student")
    s64, t64 = load_model(d / "student", torch.float64), load_model(d / "teacher", torch.float64)
    prompts = dict(zip(*flat_view(pd.read_parquet(d / "bench.parquet"))[["problem_id", "prompt"]].T.values))
    k = cfg.top_k or cfg.metrics_k
    out = {}
    for i, g in gens.iterrows():
        text = tok.apply_chat_template(list(prompts[g["problem_id"]]), tokenize=False, add_generation_prompt=True)
        p_ids = tok(text, add_special_tokens=False)["input_ids"]
        r_ids = tok(g["response"], add_special_tokens=False)["input_ids"]
        r_ids += [tok.eos_token_id] if g["finish_reason"] == "stop" else []
        ids = torch.tensor([p_ids + r_ids])
        P, R = len(p_ids), len(r_ids)
        with torch.no_grad():
            zs, zt = (m(input_ids=ids).logits[0, P - 1:P - 1 + R] for m in (s64, t64))
        S = torch.log_softmax(zs / cfg.student_temperature, -1)
        T = torch.log_softmax(zt / cfg.teacher_temperature, -1)
        st = token_mechanism_stats(S, T, k)
        y = torch.tensor(r_ids)
        st["reward"] = topk_rewards(zs, zt, cfg.top_k, cfg.strategy, cfg.weight_mode, cfg.student_temperature,
                                    cfg.teacher_temperature, tokens=y).rewards.sum(-1)
        st["token_logp"] = S.gather(-1, y[:, None])[:, 0]
        st["token_id"] = y.double()
        out[i] = st
    return out


@pytest.mark.parametrize("cfg", [OPDConfig(top_k=4, student_temperature=0.7, metrics_chunk_tokens=8),
                                 OPDConfig(top_k=0, metrics_k=3, teacher_temperature=1.3, chunk_size=7,
                                           metrics_chunk_tokens=10)],
                         ids=["top4", "sampled"])
def test_probe_matches_float64_full_logits(world, cfg):
    frame, summary = run_probe(world, cfg)
    gens = pd.read_parquet(world / "gen.parquet")
    ref = float64_reference(world, cfg, gens)
    assert list(frame.columns[:len(TOKEN_COLUMNS)]) == list(TOKEN_COLUMNS)
    assert sorted(frame["response"].unique()) == list(range(len(gens)))      # max_tokens null: all
    for i, part in frame.groupby("response"):
        st = ref[i]
        assert part["position"].tolist() == list(range(len(st["reward"])))
        assert (part["problem_id"] == gens["problem_id"][i]).all()
        for name, v in st.items():
            got = torch.tensor(part[name].to_numpy(), dtype=torch.float64)
            assert torch.allclose(got, v, rtol=1e-5, atol=1e-5), (i, name, float((got - v).abs().max()))
    # the summary is the trainer's aggregation of the same numbers
    L = max(len(v["reward"]) for v in ref.values())
    mask = torch.zeros(len(ref), L, dtype=torch.bool)
    full = {}
    for i, st in ref.items():
        mask[i, :len(st["reward"])] = True
        for name, v in st.items():
            full.setdefault(name, torch.zeros(len(ref), L, dtype=torch.float64))[i, :len(v)] = v
    expect = mechanism_metrics({k: v for k, v in full.items() if k not in ("token_logp", "token_id")}, mask,
                               chunk_tokens=cfg.metrics_chunk_tokens)
    assert set(summary["metrics"]) == set(expect)
    assert any(k.endswith("_chunk1") for k in expect)
    for name, v in expect.items():
        assert summary["metrics"][name] == pytest.approx(v, rel=1e-5, abs=1e-5), name
    assert summary["n_tokens"] == len(frame) and summary["k"] == (cfg.top_k or cfg.metrics_k)


def test_probe_subsamples_with_a_fixed_seed(world):
    cfg = OPDConfig(top_k=4)
    a, sa = run_probe(world, cfg, max_tokens=40, name="a")
    b, _ = run_probe(world, cfg, max_tokens=40, name="b")
    gens = pd.read_parquet(world / "gen.parquet")
    assert a.equals(b) and sa["n_tokens"] == len(a)
    keep = select_responses(list(gens["n_tokens"]), 40, seed=0)
    assert sorted(a["response"].unique()) == keep and 0 < len(keep) < len(gens)


def test_trainer_and_probe_give_identical_statistics(tiny_models, tiny_tokenizer, tiny_problems):
    """The native trainer's scoring of its own rollouts and the probe's scoring of the same token
    sequences give the same per-token statistics and the same ``opd/*`` metrics."""
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer, response_batch

    student, teacher = (copy.deepcopy(m) for m in tiny_models)
    cfg = TrainConfig.from_dict({"method": "opd", "steps": 1, "prompts_per_step": 4, "n_samples": 2,
                                 "max_new_tokens": 16, "objective": {"top_k": 4, "metrics_chunk_tokens": 1024}})
    rows = [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:8])]
    trainer = OnPolicyTrainer(cfg, student, tiny_tokenizer, rows, teacher=teacher,
                              teacher_tokenizer=tiny_tokenizer, single_forward=False)
    samples = trainer.rollout(1, trainer.next_prompts())
    batch = response_batch(samples, tiny_tokenizer.pad_token_id)
    scored, _ = trainer.score(batch)
    mask = batch[5]
    o = cfg.objective
    frame = score_rows(student, teacher, samples, o, tiny_tokenizer.pad_token_id, batch_size=len(samples))
    for name, v in scored.stats.items():
        trainer_vals = torch.cat([v[i][mask[i]] for i in range(len(samples))])
        probe_vals = torch.tensor(frame.sort_values(["response", "position"])[name].to_numpy())
        torch.testing.assert_close(probe_vals, trainer_vals, rtol=0, atol=1e-6, msg=name)
    want = mechanism_metrics(scored.stats, mask, chunk_tokens=o.metrics_chunk_tokens)
    got = summarise(frame, o)
    assert set(got) == set(want) and "opd/reward_teacher_only" in got
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    # re-encoding: the prompt ids are the trainer's; a well-formed response text round-trips
    enc = encode_rows(tiny_tokenizer, [rows[s["group"]]["prompt"] for s in samples],
                      [s["response"] for s in samples], [s["finish_reason"] == "stop" for s in samples])
    assert [e["prompt_ids"] for e in enc] == [s["prompt_ids"] for s in samples]
    ids = tiny_tokenizer(tiny_problems["train"][0].solution, add_special_tokens=False)["input_ids"]
    text = tiny_tokenizer.decode(ids, skip_special_tokens=True)
    enc = encode_rows(tiny_tokenizer, [rows[0]["prompt"]] * 2, [text] * 2, [True, False])
    assert enc[0]["response_ids"] == ids + [tiny_tokenizer.eos_token_id] and enc[1]["response_ids"] == ids


def test_a_training_step_logs_the_probe_metrics_of_its_rollouts(tiny_models, tiny_tokenizer, tiny_problems):
    """One real step of the native trainer (its default path): the ``opd/*`` metrics it logs equal
    the probe's summary of the same rollouts scored with the pre-step student."""
    from opd.train.config import TrainConfig
    from opd.train.native import OnPolicyTrainer

    class Recording(OnPolicyTrainer):                      # the real rollout, kept for the probe
        def rollout(self, step, prompt_idx):
            self.samples = super().rollout(step, prompt_idx)
            return self.samples

    student, teacher = (copy.deepcopy(m) for m in tiny_models)
    cfg = TrainConfig.from_dict({"method": "opd", "steps": 1, "prompts_per_step": 3, "n_samples": 2,
                                 "max_new_tokens": 12, "objective": {"top_k": 3}})
    rows = [{"problem_id": str(i), "prompt": [{"role": "user", "content": p.prompt}],
             "ground_truth": str(p.answer)} for i, p in enumerate(tiny_problems["train"][:6])]
    before = copy.deepcopy(student)
    trainer = Recording(cfg, student, tiny_tokenizer, rows, teacher=teacher, teacher_tokenizer=tiny_tokenizer)
    logged = trainer.step(1)
    frame = score_rows(before, teacher, trainer.samples, cfg.objective, tiny_tokenizer.pad_token_id)
    probed = summarise(frame, cfg.objective)
    opd_keys = {k for k in logged if k.startswith("opd/")}
    assert opd_keys == set(probed) and "opd/reward_topk_max" in probed
    for k in opd_keys:
        assert logged[k] == pytest.approx(probed[k], abs=1e-5), k
