"""
The few plain helpers that two or more scripts need: config parsing, device / DDP / autocast setup, the optimizer and
learning-rate schedule, token-normalised gradient accumulation, checkpoints, and the log line. Functions, not a
framework: every training loop stays in its own script.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist

from model import GPT, GPTConfig

LM_STAGES = ("pretrain", "sft", "ppo", "dpo")  # checkpoints whose model is a language model


# ----------------------------------------------------------------------------------------------------------------------
# configuration: one dataclass per script, every field a --field=value flag


def parse_config(cls, argv=None):
    """Build cls from --field=value flags (or --field value; a bare --flag for booleans). Unknown flags fail with the
    list of valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").split("\n\n")[0].strip(),
                                     allow_abbrev=False)
    for name, f in fields.items():
        kind = {bool: _parse_bool, int: int, float: float, str: str}[type(f.default)]
        extra = dict(nargs="?", const=True) if kind is _parse_bool else {}  # a bare --resume means --resume=true
        parser.add_argument(f"--{name}", type=kind, default=f.default, metavar=type(f.default).__name__.upper(),
                            **extra)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise SystemExit(f"unknown option(s) {' '.join(unknown)}; valid options: "
                         + " ".join(f"--{n}" for n in fields))
    return cls(**vars(args))


def _parse_bool(s):
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


# ----------------------------------------------------------------------------------------------------------------------
# device, distributed and precision


@dataclasses.dataclass
class Runtime:
    device: str        # "cuda:0", "cpu", "mps"
    device_type: str   # "cuda", "cpu", "mps"
    rank: int          # this process in torchrun (0 alone)
    world_size: int
    ddp: bool
    master: bool       # rank 0: the one that logs and writes checkpoints
    autocast: object   # a context manager: bf16 autocast on CUDA, nothing elsewhere


def setup(device="auto", dtype="auto", seed=1337):
    """Pick the device, join the torchrun process group if there is one, seed, and choose the precision."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world, local = 0, 1, 0
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if ddp:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{local}" if ddp or device == "cuda" else device
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device_type = device.split(":")[0]
    torch.manual_seed(seed)
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    ctx = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device_type, dtype={"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype])
    return Runtime(device, device_type, rank, world, ddp, rank == 0, ctx)


def cleanup(rt):
    if rt.ddp:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------------
# optimisation


def configure_optimizer(model, learning_rate, weight_decay, betas, device_type):
    """AdamW with weight decay on matrices (Linear weights, embeddings) only; biases and LayerNorm gains decay not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device_type == "cuda")


def get_lr(step, learning_rate, min_lr, warmup_iters, decay_iters):
    """Linear warmup to learning_rate, then cosine decay to min_lr at decay_iters, then min_lr."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / warmup_iters
    if step >= decay_iters:
        return min_lr
    ratio = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def accumulate_gradients(model, micro_batches, rt):
    """Forward/backward over this rank's micro-batches [(x, y), ...] so that the gradient is that of the mean loss
    over every target != -1 of the whole global batch (all micro-batches, all ranks), whatever each one holds.

    Each micro-batch's mean loss is weighted by its share of the global target count; DDP averages over ranks, so
    the weight carries a factor world_size. Averaging per micro-batch instead (nanoGPT's loss / grad_accum) is wrong
    as soon as micro-batches hold different numbers of targets (SFT's masks). Returns the global mean loss (float).
    """
    counts = [int((y != -1).sum()) for _, y in micro_batches]
    total = torch.tensor([float(sum(counts))], device=rt.device)
    if rt.ddp:
        dist.all_reduce(total)
    total = max(total.item(), 1.0)
    loss_sum = torch.zeros((), device=rt.device)
    for i, ((x, y), n) in enumerate(zip(micro_batches, counts)):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if (last or not rt.ddp) else model.no_sync()  # all-reduce once, at the end
        with sync:
            with rt.autocast:
                _, loss = model(x, y)
            (loss * (n * rt.world_size / total)).backward()
        loss_sum += loss.detach() * n
    if rt.ddp:
        dist.all_reduce(loss_sum)
    return loss_sum.item() / total


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


def ckpt_path(path):
    """A run directory (out/sft) or a checkpoint file (out/sft/ckpt.pt) -> the checkpoint file."""
    return os.path.join(path, "ckpt.pt") if not path.endswith(".pt") else path


def save_checkpoint(path, ckpt):
    """Write atomically: a run killed at any moment leaves the previous checkpoint whole."""
    path = ckpt_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, stages=None, tokenizer=None, hint=""):
    """Load a checkpoint (on the CPU) and check it fits: stage in `stages`, tokenizer equal to `tokenizer`."""
    path = ckpt_path(path)
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path}" + (f"; {hint}" if hint else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})")
    if not isinstance(ckpt, dict) or "stage" not in ckpt or "model" not in ckpt:
        raise SystemExit(f"{path} is not a checkpoint of this project (no stage / model in it)")
    if stages is not None and ckpt["stage"] not in stages:
        raise SystemExit(f"{path} is a {ckpt['stage']!r} checkpoint, but a {' or '.join(stages)} checkpoint is "
                         f"needed here" + (f"; {hint}" if hint else ""))
    if tokenizer is not None and ckpt["tokenizer"] != tokenizer:
        raise SystemExit(f"{path} uses the {ckpt['tokenizer']!r} tokenizer but the data uses {tokenizer!r}; "
                         f"train the checkpoint on data with the same tokenizer")
    return ckpt


def model_from_checkpoint(ckpt, **overrides):
    """The GPT stored in a checkpoint; overrides change config fields that do not touch the weights (dropout)."""
    model = GPT(GPTConfig(**{**ckpt["model_args"], **overrides}))
    model.load_state_dict(ckpt["model"])
    return model


def rng_state():
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model):
    """The plain module under DDP and torch.compile wrappers: what checkpoints store (no `_orig_mod.` prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------------------------------------------------
# logging


class Logger:
    """One line per step on stdout, and the same numbers as a JSON line in out_dir/log.jsonl (rank 0 only)."""

    def __init__(self, out_dir, total_steps, master=True):
        self.path = os.path.join(out_dir, "log.jsonl")
        self.total, self.master = total_steps, master
        self.t0 = time.time()
        self.first_step = None
        if master:
            os.makedirs(out_dir, exist_ok=True)

    def log(self, step, **metrics):
        if not self.master:
            return
        if self.first_step is None:
            self.first_step = step - 1
        elapsed = time.time() - self.t0
        rate = elapsed / max(1, step - self.first_step)  # seconds per step since this process started
        metrics = {"step": step, **metrics, "elapsed_s": round(elapsed, 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        parts = [f"step {step}/{self.total}"]
        for k, v in metrics.items():
            if k in ("step", "elapsed_s"):
                continue
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        parts.append(f"eta {_hms(rate * (self.total - step))}")
        print(" | ".join(parts), flush=True)


def _hms(s):
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
