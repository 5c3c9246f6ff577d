import json

import pytest
import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, PRESETS, filter_logits, preset, write_safetensors


def tiny(vocab=64, seed=0, block=64, peaky=True):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block, vocab_size=vocab, n_layer=2, n_head=2, n_embd=32)).eval()
    if peaky:  # a random model's logits are nearly flat; larger weights make greedy choices clear-cut
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(8.0)
    return model


def left_pad(prompts, pad=0):
    T = max(len(p) for p in prompts)
    idx = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    return idx, mask


PROMPTS = [[5, 9, 2], [7, 1, 4, 4, 8, 3, 11], [13, 6, 2, 9, 1]]


def naive_greedy(model, idx, mask, n):
    """Recompute the whole (padded) sequence for every new token: the reference for the KV cache."""
    for _ in range(n):
        logits, _ = model(idx, attention_mask=mask)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return idx


def test_kv_cache_greedy_equals_naive_recomputation_and_each_prompt_alone():
    model = tiny()
    idx, mask = left_pad(PROMPTS)
    out, _ = model.generate(idx, 12, temperature=0, attention_mask=mask)
    assert out.shape == (3, idx.size(1) + 12)
    assert torch.equal(out, naive_greedy(model, idx, mask, 12))
    for i, p in enumerate(PROMPTS):
        alone, _ = model.generate(torch.tensor([p]), 12, temperature=0)
        assert alone[0, len(p):].tolist() == out[i, idx.size(1):].tolist()


def test_on_a_cpu_a_mask_and_a_decode_step_take_the_plain_ops_with_the_fused_kernels_logits(monkeypatch):
    """(3) On a CPU a call with a mask and a decode step go through the plain ops, a prefill and an unmasked batch
    through the fused kernel; the fused kernel (mask None) and the plain ops (an all-ones mask) give the same
    logits, and finite gradients."""
    model = tiny()
    calls = []
    fused_kernel = F.scaled_dot_product_attention
    monkeypatch.setattr("model.F.scaled_dot_product_attention",
                        lambda q, *a, **k: calls.append(q.size(2)) or fused_kernel(q, *a, **k))
    idx = torch.tensor([p[:3] for p in PROMPTS])  # (3, 3), no padding
    fused, _ = model(idx)                                              # mask None: the fused causal kernel
    assert calls == [3] * model.config.n_layer
    calls.clear()
    plain, _ = model(idx, attention_mask=torch.ones_like(idx))         # a mask: the plain ops
    assert calls == []
    model.generate(idx, 4, temperature=0)  # the prefill (3 queries) fused, the 3 decode steps after it plain
    assert calls == [3] * model.config.n_layer
    assert plain.requires_grad and torch.allclose(plain, fused, atol=1e-5)
    plain.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_left_padding_does_not_change_the_logits_of_real_tokens():
    model = tiny()
    idx, mask = left_pad(PROMPTS)
    logits, _ = model(idx, attention_mask=mask)
    for i, p in enumerate(PROMPTS):
        alone, _ = model(torch.tensor([p]))
        assert torch.allclose(logits[i, idx.size(1) - len(p):], alone[0], atol=1e-5)
    # without the mask (pads attended, positions counted from the pad) the short rows would differ
    unmasked, _ = model(idx)
    assert not torch.allclose(unmasked[0, -3:], logits[0, -3:], atol=1e-3)


def test_rows_that_hit_eos_stop_and_others_go_on():
    model = tiny()
    idx, mask = left_pad(PROMPTS)
    free, _ = model.generate(idx, 10, temperature=0, attention_mask=mask)
    T = idx.size(1)
    eos = free[1, T + 2].item()  # make row 1's third new token the EOS
    out, lp = model.generate(idx, 10, temperature=0, attention_mask=mask, eos_id=eos, pad_id=63)
    row = out[1, T:].tolist()
    end = row.index(eos)
    assert row[end + 1:] == [63] * (len(row) - end - 1)
    assert (lp[1, end + 1:] == 0).all() and (lp[1, :end + 1] < 0).all()
    for r in (0, 2):  # rows that did not emit eos are untouched by row 1 ending
        if eos not in free[r, T:].tolist():
            assert torch.equal(out[r], free[r, :out.size(1)])


def test_finished_rows_leave_the_batch_and_the_others_are_unchanged(monkeypatch):
    model = tiny()
    prompts = [[(7 * i + j) % 60 + 1 for j in range(3 + i % 4)] for i in range(8)]
    idx, mask = left_pad(prompts)
    T = idx.size(1)
    free, _ = model.generate(idx, 16, temperature=0, attention_mask=mask)
    rows = free[:, T:T + 12].tolist()
    eos = max(range(64), key=lambda t: sum(t in r for r in rows))  # the token that ends the most rows early
    assert sum(eos in r for r in rows) >= 4
    batch_sizes = []
    decode = model._decode
    monkeypatch.setattr(model, "_decode", lambda tok, *a: batch_sizes.append(tok.size(0)) or decode(tok, *a))
    out, lp = model.generate(idx, 16, temperature=0, attention_mask=mask, eos_id=eos, pad_id=63)
    assert batch_sizes[0] == 8 and min(batch_sizes) <= 4  # half the rows ended: they left the batch ...
    assert batch_sizes == sorted(batch_sizes, reverse=True)  # ... for good
    for i, p in enumerate(prompts):  # every row as if generated alone, ended rows padded after eos with log-prob 0
        alone, alone_lp = model.generate(torch.tensor([p]), 16, temperature=0, eos_id=eos, pad_id=63)
        n = alone.size(1) - len(p)
        assert out[i, T:T + n].tolist() == alone[0, len(p):].tolist()
        assert (out[i, T + n:] == 63).all() and (lp[i, n:] == 0).all()
        assert torch.allclose(lp[i, :n], alone_lp[0], atol=1e-5)


def test_sampled_logprobs_are_those_of_the_sampling_distribution():
    model = tiny(peaky=False)
    idx, mask = left_pad(PROMPTS)
    g = torch.Generator().manual_seed(0)
    out, lp = model.generate(idx, 6, temperature=0.7, attention_mask=mask, generator=g)
    full_mask = torch.cat([mask, torch.ones(3, 6, dtype=torch.long)], 1)
    logits, _ = model(out, attention_mask=full_mask)
    T = idx.size(1)
    ref = torch.log_softmax(logits[:, T - 1:-1] / 0.7, -1).gather(2, out[:, T:].unsqueeze(2)).squeeze(2)
    assert torch.allclose(lp, ref, atol=1e-5)


def test_sampling_is_reproducible_with_a_generator_and_respects_top_k():
    model = tiny(peaky=False)
    idx = torch.tensor([PROMPTS[1]])
    a, _ = model.generate(idx, 8, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b, _ = model.generate(idx, 8, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, True, False]]
    # probabilities ~ .64 .24 .09 .03: top_p=0.7 keeps the two most likely
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[True, False, True, False]]


def test_generate_refuses_to_run_past_the_context():
    model = tiny(block=16)
    with pytest.raises(ValueError, match="context"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), 7)


def test_loss_ignores_minus_one_targets_and_is_finite_when_all_are_masked():
    model = tiny(peaky=False)
    x = torch.randint(0, 64, (2, 8))
    y = torch.randint(0, 64, (2, 8))
    y[0, :5] = -1
    logits, loss = model(x, y)
    keep = y != -1
    assert torch.allclose(loss, F.cross_entropy(logits[keep], y[keep]))
    _, none = model(x, torch.full_like(y, -1))
    assert torch.isfinite(none) and none.item() == 0.0
    none.backward()  # and it backpropagates without NaN
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_preset_parameter_counts_match_the_papers():
    def count(name):
        with torch.device("meta"):
            return GPT(preset(name, vocab_size=50257)).num_params()
    assert 124.0e6 < count("gpt2") < 124.9e6          # GPT-2 small: 124M (with the position table)
    assert 124.5e6 < count("gpt3-small") < 126.0e6    # GPT-3 Small: 125M at context 2048
    assert 354e6 < count("gpt2-medium") < 356e6
    assert 1.30e9 < count("gpt3-xl") < 1.33e9
    assert set(PRESETS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
                            "gpt3-small", "gpt3-medium", "gpt3-large", "gpt3-xl"}
    with pytest.raises(ValueError, match="valid presets: gpt2, gpt2-medium"):
        preset("gpt5")


def test_from_pretrained_reads_the_hugging_face_gpt2_layout(tmp_path):
    src = tiny(vocab=100, peaky=False, block=32)
    with torch.no_grad():  # make biases and LayerNorm non-trivial so a missed tensor shows
        for name, p in src.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    hf = {}
    for k, v in src.state_dict().items():
        if k == "lm_head.weight":
            continue  # HF's GPT2Model stores the tied matrix once, as wte
        name = k.removeprefix("transformer.")
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            v = v.t()  # Conv1D: (in, out)
        hf[name] = v.float()
    hf["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))  # a causal-mask buffer old HF files carry
    write_safetensors(str(tmp_path / "model.safetensors"), hf)
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_positions": 32, "n_ctx": 32, "n_embd": 32, "n_layer": 2, "n_head": 2,
        "vocab_size": 100, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}))
    loaded = GPT.from_pretrained(str(tmp_path), vocab_size=128).eval()
    assert loaded.config.vocab_size == 128
    x = torch.randint(0, 100, (2, 20))
    a, _ = src(x)
    b, _ = loaded(x)
    assert torch.allclose(a, b[..., :100], atol=1e-5)
    # the spare rows hold the mean embedding, not noise
    assert torch.allclose(loaded.transformer.wte.weight[100:], src.transformer.wte.weight.mean(0).expand(28, -1))
