"""
Throughput of a training step and of generation, and MFU on a GPU.

    python bench.py --mode=generate                    # GPT-2 124M shape: KV cache vs naive generation (CPU: minutes)
    python bench.py --mode=train --preset= --block_size=128 --batch_size=16   # pretrain.py's CPU model
    python bench.py --compile --batch_size=32 --out=bench.json    # on a GPU: GPT-2 training MFU at 1024, and generation
    python bench.py --mode=generate --gen_batch=32 --naive=false  # batched generation, KV cache only

The model is randomly initialised (speed does not depend on the weights); the defaults are the GPT-2 124M shape at its
context of 1024, which on a CPU is slow for the training step: pass a small shape there (second line).

Measured results, with their commands: docs/reference.md, "Performance". A busy CPU: give it one thread
(OMP_NUM_THREADS=1), as threads on cores another process also uses slow the step down.

Details implemented here:
 1. A training step is what pretrain.py does: grad_accum micro-batches of batch_size x block_size tokens through
    common.accumulate_gradients (bf16 autocast on CUDA), clipping to 1.0 (common.clip_and_step), and an AdamW step
    (common.configure_optimizer: fused on CUDA); the model goes through common.wrap, so --compile is torch.compile.
    `warmup` untimed steps (compilation, allocator), then the median of `steps` timed steps, each ended by
    torch.cuda.synchronize on a GPU.
 2. MFU (PaLM appendix B, nanoGPT's estimate_mfu): flops per token = 6 N + 12 L H Q T, with N the parameters without
    the position table (the tied embedding counts: it is the output matmul), L layers, H heads, Q head size and
    T the sequence length; MFU = flops per token x tokens per second / the device's peak bf16 dense flops (H100 SXM
    and H200 989e12, H100 PCIe 756e12, A100 312e12; another device needs --peak_flops).
 3. Generation: gen_batch prompts of prompt_len random tokens, then new_tokens greedy tokens with model.generate (KV
    cache, no EOS, so every row runs to the end); tokens/s counts new tokens and the time includes the prefill.
 4. Naive generation recomputes the whole sequence for every new token (hidden states of all positions, the head on
    the last one only, so the baseline is not made slower than it has to be). Both run side by side in one process
    on the same prompts; the speed ratio is naive time / KV time.
 5. Equality: the KV-cache tokens must equal the naive ones in float32 (TF32 off during the check). When the timed
    runs are in bf16, an extra float32 pair of runs checks it; bf16 tokens may legitimately differ at a near-tie.
"""

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from common import accumulate_gradients, clip_and_step, configure_optimizer, parse_config, setup, wrap
from model import GPT, GPTConfig, preset


@dataclass
class Config:
    mode: str = "all"               # train, generate or all
    preset: str = "gpt2"            # a model preset of model.py (gpt2, gpt3-small, ...); empty: the shape below
    n_layer: int = 4                # transformer blocks (without a preset; pretrain.py's CPU default shape)
    n_head: int = 4                 # attention heads
    n_embd: int = 128               # width
    vocab_size: int = 0             # 0: 50304 (GPT-2 BPE, padded) for a preset, 320 (the bytes tokenizer) otherwise
    block_size: int = 0             # tokens per training sequence; 0: the model's context (1024 for gpt2)
    batch_size: int = 8             # sequences per micro-batch
    grad_accum: int = 1             # micro-batches per training step
    steps: int = 10                 # timed training steps (the median is reported)
    warmup: int = 3                 # untimed training steps first (compilation, allocator)
    gen_batch: int = 1              # prompts generated together
    prompt_len: int = 32            # prompt tokens (random ids)
    new_tokens: int = 256           # greedy tokens generated after the prompt
    gen_repeats: int = 1            # timed generations of each kind (the median is reported)
    naive: bool = True              # also time naive recomputation and check it gives the KV cache's tokens
    peak_flops: float = 0.0         # the device's peak flops for MFU; 0: known GPUs only (H100, H200, A100)
    device: str = "auto"            # auto (cuda if available), cpu, cuda, cuda:1, mps
    dtype: str = "auto"             # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False           # torch.compile the model for the training step (generation runs uncompiled)
    seed: int = 1337
    out: str = ""                   # also write the numbers to this JSON file


# (2) peak dense bf16 flops of the GPUs we know, matched against torch.cuda.get_device_name in this order
PEAK_FLOPS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("A100", 312e12)]


def peak_flops(cfg, rt):
    if cfg.peak_flops > 0:
        return cfg.peak_flops
    if rt.device_type == "cuda":
        name = torch.cuda.get_device_name(rt.device)
        for key, flops in PEAK_FLOPS:
            if key in name:
                return flops
    return None


def device_name(rt):
    if rt.device_type == "cuda":
        return torch.cuda.get_device_name(rt.device)
    return f"{rt.device_type} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def sync(rt):
    if rt.device_type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(model, T):
    """(2) PaLM / nanoGPT: 6 N for the matmuls forward and backward, 12 L H Q T for attention."""
    c = model.config
    return 6 * model.num_params(non_embedding=True) + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T


def bench_train(raw, cfg, rt):
    T = cfg.block_size or raw.config.block_size
    if T > raw.config.block_size:
        raise SystemExit(f"--block_size={T} exceeds the model's context of {raw.config.block_size}")
    raw.train()
    optimizer = configure_optimizer(raw, 6e-4, 0.1, (0.9, 0.95), rt.device_type)
    model = wrap(raw, rt, cfg.compile)
    g = torch.Generator().manual_seed(cfg.seed)
    n = cfg.batch_size * cfg.grad_accum
    x = torch.randint(raw.config.vocab_size, (n, T), generator=g).to(rt.device)
    y = torch.randint(raw.config.vocab_size, (n, T), generator=g).to(rt.device)
    micro = [(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]) for i in range(0, n, cfg.batch_size)]
    times, losses = [], []
    for step in range(cfg.warmup + cfg.steps):
        sync(rt)
        t0 = time.perf_counter()
        loss = accumulate_gradients(model, micro, rt)  # (1) the forward / backward pretrain.py runs
        clip_and_step(model, optimizer, rt, 1.0, loss, step, "out/bench")
        optimizer.zero_grad(set_to_none=True)
        sync(rt)
        dt = time.perf_counter() - t0
        losses.append(loss)
        if step >= cfg.warmup:
            times.append(dt)
        print(f"train step {step + 1}/{cfg.warmup + cfg.steps}: {dt * 1000:.1f} ms, loss {loss:.3f}"
              + (" (warmup)" if step < cfg.warmup else ""), flush=True)
    dt = statistics.median(times)
    tokens = n * T
    r = {"block_size": T, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "tokens_per_step": tokens,
         "step_ms": dt * 1000, "tokens_per_s": tokens / dt, "flops_per_token": flops_per_token(raw, T),
         "loss_first": losses[0], "loss_last": losses[-1]}
    r["achieved_tflops"] = r["flops_per_token"] * r["tokens_per_s"] / 1e12
    peak = peak_flops(cfg, rt)
    r["peak_tflops"] = peak / 1e12 if peak else None
    r["mfu"] = r["flops_per_token"] * r["tokens_per_s"] / peak if peak else None  # (2)
    if rt.device_type == "cuda":
        r["max_memory_gb"] = torch.cuda.max_memory_allocated(rt.device) / 2**30
    del optimizer, model
    raw.zero_grad(set_to_none=True)
    return r


@torch.no_grad()
def naive_generate(model, idx, n):
    """(4) Greedy tokens by recomputing the whole sequence for every new one: no cache at all."""
    for _ in range(n):
        h = model.hidden_states(idx)[:, -1]                      # (B, C): all T positions recomputed, keep the last
        nxt = model.lm_head(h).float().argmax(-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, nxt], 1)
    return idx


def kv_generate(model, idx, n):
    return model.generate(idx, n, temperature=0)[0]


def timed(fn, rt, repeats):
    """The median time of `repeats` calls and the output of the last one."""
    times = []
    for _ in range(repeats):
        sync(rt)
        t0 = time.perf_counter()
        out = fn()
        sync(rt)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_generate(raw, cfg, rt, dtype):
    raw.eval()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    idx = torch.randint(raw.config.vocab_size, (cfg.gen_batch, cfg.prompt_len), generator=g).to(rt.device)
    n, new = cfg.new_tokens, cfg.gen_batch * cfg.new_tokens
    r = {"gen_batch": cfg.gen_batch, "prompt_len": cfg.prompt_len, "new_tokens": n}
    with rt.autocast:
        kv_generate(raw, idx, min(n, 8))  # warm up kernels and the allocator, untimed
        dt, kv = timed(lambda: kv_generate(raw, idx, n), rt, cfg.gen_repeats)
    r.update(kv_s=dt, kv_tokens_per_s=new / dt, kv_ms_per_token=dt * 1000 / n)
    print(f"kv cache: {dt:.2f} s for {n} tokens x {cfg.gen_batch} rows, {new / dt:.1f} tokens/s", flush=True)
    if not cfg.naive:
        return r
    with rt.autocast:
        naive_generate(raw, idx, min(n, 8))
        dt, naive = timed(lambda: naive_generate(raw, idx, n), rt, cfg.gen_repeats)
    r.update(naive_s=dt, naive_tokens_per_s=new / dt, naive_ms_per_token=dt * 1000 / n, speedup=dt / r["kv_s"])
    print(f"naive:    {dt:.2f} s for {n} tokens x {cfg.gen_batch} rows, {new / dt:.1f} tokens/s", flush=True)
    if dtype == "float32":
        r["tokens_equal_fp32"] = bool(torch.equal(kv, naive))
    else:  # (5) the timed runs were bf16: check equality in float32, with TF32 off
        r["tokens_equal_" + dtype] = bool(torch.equal(kv, naive))
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        r["tokens_equal_fp32"] = bool(torch.equal(kv_generate(raw, idx, n), naive_generate(raw, idx, n)))
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return r


if __name__ == "__main__":
    cfg = parse_config(Config)
    if cfg.mode not in ("train", "generate", "all"):
        raise SystemExit(f"--mode={cfg.mode}: expected train, generate or all")
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    dtype = rt.dtype  # what setup chose

    # the model: a preset's shape or the one given; its context fits the generation asked for
    if cfg.preset:
        try:
            gpt_config = preset(cfg.preset, vocab_size=cfg.vocab_size or 50304, dropout=0.0)
        except ValueError as e:
            raise SystemExit(str(e))
    else:
        context = cfg.block_size or 128
        if cfg.mode != "train":
            context = max(context, cfg.prompt_len + cfg.new_tokens)
        gpt_config = GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=context,
                               vocab_size=cfg.vocab_size or 320, dropout=0.0)
    if cfg.mode != "train" and cfg.prompt_len + cfg.new_tokens > gpt_config.block_size:
        raise SystemExit(f"--prompt_len={cfg.prompt_len} + --new_tokens={cfg.new_tokens} exceed the context of "
                         f"{gpt_config.block_size} of preset {cfg.preset}")
    raw = GPT(gpt_config).to(rt.device)
    print(f"config: {json.dumps(asdict(cfg))}")
    print(f"model: {raw.num_params() / 1e6:.2f}M parameters, {json.dumps(asdict(raw.config))}")
    print(f"device: {device_name(rt)}, torch {torch.__version__}, {dtype}", flush=True)

    results = {"config": asdict(cfg), "model": asdict(raw.config), "params": raw.num_params(),
               "device": device_name(rt), "torch": torch.__version__, "dtype": dtype}
    if cfg.mode in ("train", "all"):
        results["train"] = bench_train(raw, cfg, rt)
    if cfg.mode in ("generate", "all"):
        results["generate"] = bench_generate(raw, cfg, rt, dtype)

    print(f"\n== bench: {raw.num_params() / 1e6:.1f}M params on {results['device']}, {dtype}"
          f"{', compiled' if cfg.compile else ''}")
    if "train" in results:
        t = results["train"]
        mfu = f", MFU {t['mfu'] * 100:.1f}% of {t['peak_tflops']:.0f} TFLOPS" if t["mfu"] is not None else ""
        print(f"train     {t['batch_size']} x {t['grad_accum']} x {t['block_size']} tokens: "
              f"{t['step_ms']:.1f} ms/step, {t['tokens_per_s']:,.0f} tokens/s, {t['achieved_tflops']:.2f} TFLOPS{mfu}")
    if "generate" in results:
        gr = results["generate"]
        print(f"generate  {gr['gen_batch']} x ({gr['prompt_len']} prompt + {gr['new_tokens']} new), greedy:")
        print(f"  kv cache  {gr['kv_tokens_per_s']:10,.1f} tokens/s  ({gr['kv_ms_per_token']:.2f} ms/token)")
        if "naive_s" in gr:
            print(f"  naive     {gr['naive_tokens_per_s']:10,.1f} tokens/s  ({gr['naive_ms_per_token']:.2f} ms/token)")
            print(f"  kv cache is {gr['speedup']:.1f}x faster; same tokens in float32: {gr['tokens_equal_fp32']}"
                  + (f", in bfloat16: {gr['tokens_equal_bfloat16']}" if "tokens_equal_bfloat16" in gr else ""))
    if cfg.out:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
        with open(cfg.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {cfg.out}")
