import json

import pytest
import torch

from bench import flops_per_token
from conftest import run
from model import GPT, preset

TINY = ["--preset=", "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--grad_accum=2",
        "--steps=2", "--warmup=1", "--prompt_len=8", "--new_tokens=12", "--device=cpu",
        "--dtype=float32"]  # the KV cache's tokens equal recomputation's exactly in float32


def test_bench_reports_training_and_generation_numbers(tmp_path):
    out = tmp_path / "bench.json"
    proc = run("bench.py", *TINY, "--peak_flops=1e12", f"--out={out}")
    r = json.loads(out.read_text())
    t, g = r["train"], r["generate"]
    assert t["tokens_per_step"] == 4 * 2 * 32
    for k in ("step_ms", "tokens_per_s", "flops_per_token", "achieved_tflops", "mfu"):
        assert t[k] > 0, k
    assert t["mfu"] == pytest.approx(t["flops_per_token"] * t["tokens_per_s"] / 1e12)
    for k in ("kv_s", "kv_tokens_per_s", "naive_s", "naive_tokens_per_s", "speedup"):
        assert g[k] > 0, k
    assert g["tokens_equal_fp32"] is True  # the KV cache gives the tokens of full recomputation
    assert r["dtype"] == "float32"
    assert "kv cache is" in proc.stdout and "tokens/s" in proc.stdout and "MFU" in proc.stdout


def test_bench_refuses_an_unknown_mode():
    proc = run("bench.py", "--mode=fast", check=False)
    assert proc.returncode != 0 and "train, generate or all" in proc.stderr


def test_flops_per_token_is_nanogpts_estimate():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = GPT(preset("gpt2"))
    n = model.num_params() - 1024 * 768  # without the position table; the tied embedding is the output matmul
    assert flops_per_token(model, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024
