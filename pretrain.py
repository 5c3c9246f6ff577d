"""
Causal-LM pretraining on a token stream: the stage that makes a GPT, which continues text and follows no instructions.

    python data/pycode/prepare.py                      # the Python standard library as bytes (seconds, offline)
    python pretrain.py                                 # CPU default: ~1M-param model, ~10 minutes on 2 cores
    python pretrain.py --resume                        # continue out/pretrain/ckpt.pt where it stopped
    python pretrain.py --preset=gpt2 --data_dir=data/my_corpus --batch_size=16 --grad_accum=32   # on a GPU
    python pretrain.py --init_from=gpt2 --data_dir=data/my_corpus ...   # continue pretraining OpenAI's GPT-2
    torchrun --standalone --nproc_per_node=2 pretrain.py   # DDP, same global batch as one process

Details implemented here:
 1. Loss: next-token cross-entropy, max sum_t log P(x_t | x_<t), on random windows of block_size + 1 tokens of a
    uint16 memmap (train.bin / val.bin, with meta.json naming the tokenizer).
 2. AdamW (beta1 0.9, beta2 0.95; GPT-3 paper), weight decay 0.1 on matrices only, linear warmup then cosine decay
    to min_lr (GPT-3), gradient clipping at global norm 1.0.
 3. Gradient accumulation normalised over the tokens of the whole global batch (common.accumulate_gradients), and
    under DDP one all-reduce per step, not per micro-batch.
 4. Data order is a pure function of (seed, step): step s always reads the same windows, so --resume, or a
    different number of processes with the same global batch, sees exactly the same data.
 5. Checkpoints (atomic) every eval_interval steps and at the end hold the weights of the unwrapped model, the
    optimizer, the RNG state and the step: --resume reproduces an uninterrupted run.
 6. A NaN / inf loss stops the run before the update, leaving the last checkpoint intact, and says at which step.
 7. The default config is the CPU recipe for data/pycode (bytes): 4 layers, 128 wide, context 128 (0.87M params);
    small batches (16 x 128 tokens) and many steps beat big batches in a fixed 10 minutes at this size; the
    learning rate is high (3e-3) because the model is small, and decays to 1e-4.
"""

import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from common import (LM_STAGES, Logger, accumulate_gradients, clip_and_step, cleanup, configure_optimizer, get_lr,
                    load_checkpoint, model_from_checkpoint, parse_config, rng_state, save_checkpoint, set_rng_state,
                    setup, source_of, unwrap, wrap)
from model import GPT, GPTConfig, preset


@dataclass
class Config:
    data_dir: str = "data/pycode"   # holds train.bin, val.bin, meta.json (written by that data's prepare.py)
    out_dir: str = "out/pretrain"   # checkpoint and log.jsonl go here
    resume: bool = False            # continue from out_dir/ckpt.pt
    init_from: str = ""             # "": fresh weights; gpt2, gpt2-medium.., a Hugging Face GPT-2 directory or a
                                    # checkpoint: continue pretraining it (the shape fields below are then unused)
    preset: str = ""                # a model preset of model.py (gpt2, gpt3-small, ...); empty: the shape below
    n_layer: int = 4                # transformer blocks
    n_head: int = 4                 # attention heads
    n_embd: int = 128               # width
    block_size: int = 128           # context length in tokens
    dropout: float = 0.0            # no dropout when pretraining on fresh data (nanoGPT)
    bias: bool = True               # biases in Linear and LayerNorm
    batch_size: int = 16            # sequences per micro-batch per process
    grad_accum: int = 1             # micro-batches per step per process
    max_iters: int = 3600           # optimizer steps
    lr_decay_iters: int = 0         # steps of cosine decay; 0 means max_iters
    learning_rate: float = 3e-3     # peak learning rate
    min_lr: float = 1e-4            # learning rate at the end of the decay
    warmup_iters: int = 100         # linear warmup steps
    weight_decay: float = 0.1       # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0          # clip the global gradient norm; 0 disables
    eval_interval: int = 300        # steps between val-loss evaluations and checkpoints
    eval_iters: int = 20            # val batches per evaluation
    log_interval: int = 50          # steps between log lines
    seed: int = 1337
    device: str = "auto"            # auto (cuda if available), cpu, cuda, cuda:1, mps
    dtype: str = "auto"             # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False           # torch.compile the model (GPUs)


def load_tokens(data_dir):
    """The memmapped train / val token streams and meta.json of a prepared dataset."""
    paths = [os.path.join(data_dir, f) for f in ("train.bin", "val.bin", "meta.json")]
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(f"{p} not found: prepare the data first: python {os.path.join(data_dir, 'prepare.py')}")
    with open(paths[2]) as f:
        meta = json.load(f)
    return np.memmap(paths[0], dtype=np.uint16, mode="r"), np.memmap(paths[1], dtype=np.uint16, mode="r"), meta


def get_batch(data, n, block_size, generator):
    """n random windows of data: x (n, block_size) and y = x shifted by one (1)."""
    ix = torch.randint(len(data) - block_size - 1, (n,), generator=generator).tolist()
    xy = torch.from_numpy(np.stack([data[i:i + block_size + 1].astype(np.int64) for i in ix]))
    return xy[:, :-1], xy[:, 1:]


@torch.no_grad()
def estimate_loss(model, data, cfg, rt):
    """Mean loss over eval_iters fixed batches (the same ones every time, so the curve is comparable)."""
    model.eval()
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in range(cfg.eval_iters):
        x, y = get_batch(data, cfg.batch_size, cfg.block_size, g)
        with rt.autocast:
            _, loss = model(x.to(rt.device), y.to(rt.device))
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    train_data, val_data, meta = load_tokens(cfg.data_dir)
    decay_iters = cfg.lr_decay_iters or cfg.max_iters

    # model: fresh, from other weights, or the run being resumed
    ckpt, step, parent = None, 0, None
    if cfg.resume:
        ckpt = load_checkpoint(cfg.out_dir, stages=("pretrain",), tokenizer=meta["tokenizer"],
                               hint="run without --resume to start a new run")
        model = model_from_checkpoint(ckpt)
        step, parent = ckpt["step"], ckpt.get("parent")
    elif cfg.init_from:
        model = model_from_checkpoint(load_checkpoint(cfg.init_from, stages=LM_STAGES, tokenizer=meta["tokenizer"]),
                                      dropout=cfg.dropout)
        parent = source_of(cfg.init_from)
    else:
        shape = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size)
        try:
            gpt_config = preset(cfg.preset, vocab_size=meta["vocab_size"], dropout=cfg.dropout, bias=cfg.bias) \
                if cfg.preset else GPTConfig(**shape, vocab_size=meta["vocab_size"], dropout=cfg.dropout, bias=cfg.bias)
        except ValueError as e:
            raise SystemExit(str(e))
        model = GPT(gpt_config)
    if model.config.block_size < cfg.block_size:
        raise SystemExit(f"--block_size={cfg.block_size} exceeds the model's context of {model.config.block_size}")
    model.to(rt.device)
    optimizer = configure_optimizer(model, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    rt.device_type)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # fp16's loss scale, so that a resumed run goes on exactly
            rt.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], rt)
    raw, model = model, wrap(model, rt, cfg.compile)

    if rt.master:
        print(f"config: {json.dumps(asdict(cfg))}")
        print(f"model: {raw.num_params() / 1e6:.2f}M parameters, {json.dumps(asdict(raw.config))}")
        print(f"data: {len(train_data):,} train / {len(val_data):,} val tokens ({meta['tokenizer']} tokenizer)")
    logger = Logger(cfg.out_dir, cfg.max_iters, rt.master, step if cfg.resume else None)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * rt.world_size * cfg.block_size

    def checkpoint(val_loss):
        rng = rng_state(rt)  # every rank's, so that a resumed DDP run draws the same dropout masks
        if rt.master:
            save_checkpoint(cfg.out_dir, {
                "model": unwrap(model).state_dict(), "model_args": asdict(raw.config),
                "tokenizer": meta["tokenizer"],
                "stage": "pretrain", "parent": parent, "config": asdict(cfg), "step": step,
                "optimizer": optimizer.state_dict(), "scaler": rt.scaler.state_dict(), "rng": rng,
                "val_loss": val_loss})

    if step == 0 and rt.master:
        logger.log(step, val_loss=estimate_loss(raw, val_data, cfg, rt))
    t_last, step_last = time.time(), step
    while step < cfg.max_iters:
        lr = get_lr(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, decay_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # (4) the global batch of this step, a function of (seed, step); this rank takes its slice of it
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        per_rank = cfg.batch_size * cfg.grad_accum
        x, y = get_batch(train_data, per_rank * rt.world_size, cfg.block_size, g)
        x, y = (t[rt.rank * per_rank:(rt.rank + 1) * per_rank].to(rt.device) for t in (x, y))
        micro = [(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]) for i in range(0, per_rank, cfg.batch_size)]
        loss = accumulate_gradients(model, micro, rt)  # (3)
        clip_and_step(model, optimizer, rt, cfg.grad_clip, loss, step, cfg.out_dir)  # (2) clip, (6) stop before NaN
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.log_interval == 0 or step == cfg.max_iters:
            dt = (time.time() - t_last) / (step - step_last)
            t_last, step_last = time.time(), step
            logger.log(step, loss=loss, lr=lr, ms_per_step=dt * 1000, tok_per_s=tokens_per_step / dt)
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            val_loss = estimate_loss(raw, val_data, cfg, rt) if rt.master else None
            logger.log(step, val_loss=val_loss)
            checkpoint(val_loss)  # (5)
            t_last, step_last = time.time(), step  # evaluation time is not training time
    cleanup(rt)
