"""Tokenizer and model bootstrap of the tiny world: real tokenizers and Qwen3 models."""
import torch

from opd.generation.hf import load_model, load_tokenizer
from opd.world.models import ModelSpec, init_model


def test_tokenizer_round_trips_and_has_special_tokens(tiny_tokenizer, tiny_problems):
    tok = tiny_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    for p in tiny_problems["train"][:20]:
        ids = tok(p.solution, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == p.solution
    digits = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"])
    assert digits == list("12345")  # digits are single tokens


def test_think_markers_survive_decoding_like_qwen3s(tiny_tokenizer, tmp_path):
    """As in Qwen3's tokenizer, <think> and </think> are single added tokens that are not special:
    a response decoded with skip_special_tokens (the generation backends' default, which the
    teacher's rollouts and the cold start's SFT data go through) keeps its think block, and
    drops the chat tokens. Before the fix the rollouts lost the markers and the cold-started
    student never opened a think block (docs/world.md, iteration 7)."""
    tiny_tokenizer.save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    response = "<think>\nStart with 2. 2 plus 3 makes 5.\n</think>\n\nThe answer is \\boxed{5}."
    ids = tok(response + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<think>")) == 1
    assert ids.count(tok.convert_tokens_to_ids("</think>")) == 1
    assert tok.decode(ids, skip_special_tokens=True) == response
    assert set(tok.all_special_tokens) >= {"<|im_end|>", "<|endoftext|>"}
    assert not {"<think>", "</think>"} & set(tok.all_special_tokens)


def test_chat_template_is_chatml(tiny_tokenizer):
    msgs = [{"role": "user", "content": "What is 1 + 1?"}]
    text = tiny_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"
    off = tiny_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                             enable_thinking=False)
    assert off.endswith("<think>\n\n</think>\n\n")


def test_model_is_qwen3_and_saves_as_hf_dir(tiny_tokenizer, tmp_path):
    model = init_model(ModelSpec(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                                 intermediate_size=64), tiny_tokenizer)
    assert model.config.model_type == "qwen3"
    assert model.config.vocab_size == len(tiny_tokenizer)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    again, tok = load_model(tmp_path), load_tokenizer(tmp_path)
    ids = torch.tensor([tok("1 + 2 = 3")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids).logits, again(ids).logits, atol=1e-5)


def test_bad_model_spec_is_rejected():
    import pytest
    with pytest.raises(ValueError, match="divisible"):
        ModelSpec(hidden_size=30, num_heads=4)
