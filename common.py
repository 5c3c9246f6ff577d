"""
The few plain helpers that two or more scripts need: config parsing, device / DDP / autocast setup, the optimizer and
learning-rate schedule, token-normalised gradient accumulation, checkpoints, and the log line. Functions, not a
framework: every training loop stays in its own script.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist

from model import GPT, GPT2_NAMES, GPTConfig

LM_STAGES = ("pretrain", "sft", "ppo", "dpo")  # checkpoints whose model is a language model


# ----------------------------------------------------------------------------------------------------------------------
# configuration: one dataclass per script, every field a --field=value flag


def parse_config(cls, argv=None):
    """Build cls from --field=value flags (or --field value; a bare --flag for booleans). --config=FILE.json first
    sets fields from a named recipe; flags after it still override. Unknown flags fail with the list of valid ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    argv = sys.argv[1:] if argv is None else list(argv)
    preset = {}
    for a in [a for a in argv if a.startswith("--config=")]:  # a named recipe: a JSON file of field values
        argv.remove(a)
        with open(a.split("=", 1)[1]) as f:
            preset.update(json.load(f))
    bad = sorted(set(preset) - set(fields))
    if bad:
        raise SystemExit(f"unknown field(s) {', '.join(bad)} in the --config file; valid fields: {', '.join(fields)}")
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").split("\n\n")[0].strip(),
                                     allow_abbrev=False)
    for name, f in fields.items():
        kind = {bool: _parse_bool, int: int, float: float, str: str}[type(f.default)]
        extra = dict(nargs="?", const=True) if kind is _parse_bool else {}  # a bare --resume means --resume=true
        parser.add_argument(f"--{name}", type=kind, default=preset.get(name, f.default),
                            metavar=type(f.default).__name__.upper(), **extra)
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
    autocast: object   # a context manager: bf16 (or fp16) autocast on CUDA, nothing on a CPU
    dtype: str = "float32"  # what autocast computes in: float32, bfloat16 or float16
    scaler: object = dataclasses.field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))
    # ^ fp16's loss scaler (a no-op unless dtype is float16): scaler.scale(loss).backward(), then clip_and_step


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
    if device_type == "cpu":
        keep_freed_memory()
    torch.manual_seed(seed + rank)  # each rank its own dropout masks and samples
    if dtype == "auto":  # bf16 autocast where the hardware multiplies bf16 natively: GPUs from Ampere on (older ones
        # emulate it: fp16 there), CPUs with AVX512-BF16 or AMX (others emulate it, and an older torch without
        # torch.cpu.get_capabilities cannot tell: fp32 there); autocast keeps weights and optimizer state in fp32
        if device_type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
        else:
            caps = getattr(torch.cpu, "get_capabilities", dict)() if device_type == "cpu" else {}  # mps: fp32
            dtype = "bfloat16" if caps.get("avx512_bf16") or caps.get("amx_bf16") else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise SystemExit(f"--dtype={dtype} is not supported; use auto, float32, bfloat16 or float16")
    ctx = contextlib.nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=getattr(torch, dtype))
    # fp16's 5-bit exponent underflows small gradients: scale the loss up before backward, unscale before the step,
    # and skip a step whose gradient overflowed (halving the scale); bf16 has fp32's range and needs none of it
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")
    return Runtime(device, device_type, rank, world, ddp, rank == 0, ctx, dtype, scaler)


def keep_freed_memory():
    """Keep freed CPU memory for the next tensor instead of handing it back to the kernel (Linux, glibc). glibc
    maps each block of 32 MiB or more (a large batch's (B, nh, T, S) attention scores) with mmap and unmaps it when
    freed, and trims the heap's free top, so the next forward pass faults the same pages in again: kernel time that
    can rival a small model's arithmetic (docs/experiments.md, "Freed memory"). Raising both thresholds to 1 GiB
    keeps the pages (the process holds on to its peak's memory); no number changes. Where there is no glibc (macOS,
    Windows, musl) this does nothing."""
    import ctypes  # the standard library's; only this function needs it
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
    # the trim threshold only once the mmap one took (mallopt may refuse a value): set alone, it would freeze
    # the mmap threshold at its 128 KiB start, and every block above that would be mapped and unmapped
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def wrap(model, rt, compile=False):
    """torch.compile and DDP wrappers around a model already on rt.device; keep the plain module for checkpoints
    and evaluation (common.unwrap gives it back too)."""
    if compile:
        model = torch.compile(model)
    if rt.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(rt.device.split(":")[1])] if rt.device_type == "cuda" else None)
    return model


def cleanup(rt):
    """The last line of a training script. Alone it does nothing; under torchrun every rank waits for the others,
    leaves the process group and ends the process here, without Python's interpreter teardown.

    Why not return and let Python exit: gloo's worker threads live as long as the process group, and DDP holds it
    past destroy_process_group. After a collective returns, the worker that ran it can still be freeing its tensors;
    one made in Python (all_gather_object's, in rng_state) needs the GIL to be freed, and a thread that asks for the
    GIL once the interpreter has begun to finalise is ended mid-destructor: `terminate called without an active
    exception`, SIGABRT, and torchrun fails a run that had finished (PyTorch issue #190489; seen on a loaded 2-core
    machine, where the worker waits longest for a core). Everything is written by now (checkpoints are fsynced, the
    log is closed after each line), so nothing is lost by skipping the teardown; stdout and stderr are flushed."""
    if rt.ddp:
        dist.barrier(device_ids=[torch.cuda.current_device()] if rt.device_type == "cuda" else None)  # all done
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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


def load_labeler(path, required=False):
    """A dataset's labeler module (score(record, response), rank(...)) loaded from its file, or None for an empty
    path unless required. By path, not by name: a labeler.py elsewhere, or one named like a module of this
    repository, is the file given."""
    if not path and not required:
        return None
    if not os.path.isfile(path):
        hint = "" if required else "; pass --labeler='' to run without the gold metric"
        raise SystemExit(f"labeler {path!r} not found (--labeler= names the dataset's labeler.py){hint}")
    return load_module(path, "labeler")


def load_module(path, name):
    """A Python file loaded as a module by its path (a labeler, ppo.py's verifier), not put in sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clip_and_step(model, optimizer, rt, grad_clip, loss, step, out_dir):
    """Clip the global gradient norm to grad_clip (0: no clipping) and take the optimizer step; stop the run before
    the update when the loss or the gradient is NaN or infinite, saying what is left on disk. Under fp16 loss scaling
    the gradient is unscaled first, and an overflowed one is the scaler's business: it skips that step and halves
    the scale (the loss must still be finite)."""
    rt.scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if math.isfinite(loss) and (math.isfinite(float(grad_norm)) or rt.scaler.is_enabled()):
        rt.scaler.step(optimizer)
        rt.scaler.update()
        return
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {float(grad_norm)}"
    kept = (f"{ckpt_path(out_dir)} still holds the last good weights (lower --learning_rate and run with --resume)"
            if os.path.exists(ckpt_path(out_dir)) else "no checkpoint was written yet (lower --learning_rate)")
    raise SystemExit(f"{what} at step {step}: stopped before the update; {kept}")


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
            rt.scaler.scale(loss * (n * rt.world_size / total)).backward()
        loss_sum += loss.detach() * n
    if rt.ddp:
        dist.all_reduce(loss_sum)
    return loss_sum.item() / total


# ----------------------------------------------------------------------------------------------------------------------
# data files


def read_jsonl(path, validate, hint=""):
    """The records of a JSONL file, each checked by validate(record), which raises ValueError saying what it expected.
    A missing file, a line that is not JSON or a record that fails the check stops the run naming file and line."""
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found" + (f": {hint}" if hint else ""))
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: not valid JSON ({e})")
            try:
                validate(record)
            except (ValueError, TypeError, KeyError) as e:
                raise SystemExit(f"{path}:{lineno}: {e}")
            records.append(record)
    return records


def check_messages(record, last_role=None):
    """Check record["messages"]: a list of {"role": system|user|assistant, "content": str}, ending with last_role
    if given."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        raise ValueError('expected an object with a non-empty "messages" list')
    for m in record["messages"]:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError('expected messages like {"role": "system"|"user"|"assistant", "content": "..."}, '
                             f'got {m!r}')
    if last_role and record["messages"][-1]["role"] != last_role:
        raise ValueError(f"expected the last message to be a {last_role} turn")


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints


def ckpt_path(path):
    """A run directory (out/sft) or a checkpoint file (out/sft/ckpt.pt) -> the checkpoint file."""
    path = str(path)
    return os.path.join(path, "ckpt.pt") if not path.endswith(".pt") else path


def save_checkpoint(path, ckpt):
    """Write atomically: a run killed at any moment leaves the previous checkpoint whole."""
    path = ckpt_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename, so even a power cut leaves one whole checkpoint
    os.replace(tmp, path)


def is_hf_gpt2(path):
    """A GPT-2 name or a directory in the Hugging Face GPT-2 layout (config.json + model.safetensors)?"""
    return str(path) in GPT2_NAMES or os.path.exists(os.path.join(str(path), "model.safetensors"))


def hf_checkpoint(path):
    """A Hugging Face GPT-2 (a name, downloaded once, or a directory: export.py writes one) as a "pretrain"
    checkpoint, so every stage can start from it: --init_from=gpt2. Tokenizer gpt2 unless config.json names one."""
    model = GPT.from_pretrained(str(path))
    tokenizer = "gpt2"
    if os.path.isdir(str(path)):
        with open(os.path.join(str(path), "config.json")) as f:
            tokenizer = json.load(f).get("tokenizer", "gpt2")
    return {"model": model.state_dict(), "model_args": dataclasses.asdict(model.config), "tokenizer": tokenizer,
            "stage": "pretrain", "parent": None, "step": 0}


def source_of(path):
    """How a checkpoint names the one it started from: an absolute path, or a GPT-2 name as given."""
    return str(path) if str(path) in GPT2_NAMES else os.path.abspath(path)


def load_checkpoint(path, stages=None, tokenizer=None, hint=""):
    """Load a checkpoint (on the CPU) and check it fits: stage in `stages`, tokenizer equal to `tokenizer`.
    A GPT-2 name or a Hugging Face GPT-2 directory loads as a "pretrain" checkpoint (hf_checkpoint)."""
    if not os.path.exists(ckpt_path(path)) and is_hf_gpt2(path):  # a run directory's own ckpt.pt comes first
        ckpt, path = hf_checkpoint(path), str(path)
    else:
        ckpt, path = _read_checkpoint(ckpt_path(path), hint), ckpt_path(path)
    if stages is not None and ckpt["stage"] not in stages:
        raise SystemExit(f"{path} is a {ckpt['stage']!r} checkpoint, but a {' or '.join(stages)} checkpoint is "
                         f"needed here" + (f"; {hint}" if hint else ""))
    if tokenizer is not None and ckpt["tokenizer"] != tokenizer:
        raise SystemExit(f"{path} uses the {ckpt['tokenizer']!r} tokenizer but the data uses {tokenizer!r}; "
                         f"train the checkpoint on data with the same tokenizer")
    return ckpt


def _read_checkpoint(path, hint):
    if not os.path.exists(path):
        raise SystemExit(f"no checkpoint at {path}" + (f"; {hint}" if hint else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})")
    if not isinstance(ckpt, dict) or "stage" not in ckpt or "model" not in ckpt:
        raise SystemExit(f"{path} is not a checkpoint of this project (no stage / model in it)")
    return ckpt


def model_from_checkpoint(ckpt, **overrides):
    """The GPT stored in a checkpoint; overrides change config fields that do not touch the weights (dropout)."""
    model = GPT(GPTConfig(**{**ckpt["model_args"], **overrides}))
    model.load_state_dict(ckpt["model"])
    return model


def rng_state(rt):
    """Every rank's RNG state, gathered (a collective: all ranks call it), for the checkpoint."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    state = {"torch": torch.get_rng_state(), "cuda": cuda}
    if not rt.ddp:
        return [state]
    states = [None] * rt.world_size
    dist.all_gather_object(states, state)
    return states


def set_rng_state(states, rt):
    """Restore this rank's RNG state; with another number of ranks than the run had, keep the fresh seeds."""
    if len(states) != rt.world_size:
        print(f"warning: the checkpoint has RNG states of {len(states)} ranks, this run has {rt.world_size}; "
              f"dropout masks will differ from an uninterrupted run", file=sys.stderr)
        return
    torch.set_rng_state(states[rt.rank]["torch"])
    if states[rt.rank]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states[rt.rank]["cuda"])


def unwrap(model):
    """The plain module under DDP and torch.compile wrappers: what checkpoints store (no `_orig_mod.` prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def answer_logps(model, idx, mask, starts, rt, temperature=1.0):
    """Sum of log p(token | tokens before it) over each row's answer: positions starts[i] .. the row's last real
    token, right-padded idx, mask (B, T), starts (B,), p from logits / temperature. One forward pass -> (B,). DPO's
    sequence log-probs and evaluate.py's KL to SFT."""
    with rt.autocast:
        logits, _ = model(idx, attention_mask=mask)                                        # (B, T, V)
    logp = torch.log_softmax(logits[:, :-1].float() / temperature, -1)
    logp = logp.gather(-1, idx[:, 1:, None]).squeeze(-1)                                   # (B, T - 1)
    pos = torch.arange(1, idx.size(1), device=idx.device)                                  # the predicted token
    answer = (pos >= starts[:, None]) & mask[:, 1:].bool()                                 # (B, T - 1)
    return (logp * answer).sum(1)


# ----------------------------------------------------------------------------------------------------------------------
# a conversation that fits the context (sample.py --chat, serve.py)


def left_truncate(ids, limit, what):
    """Keep the last `limit` tokens, saying so when that drops any."""
    if len(ids) > limit:
        print(f"warning: {what} has {len(ids)} tokens, more than the {limit} that fit; keeping the last {limit}",
              file=sys.stderr)
        return ids[-limit:]
    return ids


def question_alone(messages):
    """A conversation's last question alone: its system message (if any) and last message, nothing between.
    evaluate.py (22) measures a later turn against it; distill.py teaches its answer in the conversation."""
    return [m for m in messages[:1] if m["role"] == "system"] + messages[-1:]


def fit_chat(tok, messages, limit):
    """Render messages as a prompt, dropping the oldest exchanges (not the system message) until it fits.
    Returns (ids, the messages kept)."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system):]
    while True:
        ids = tok.render_prompt(system + rest)
        if len(ids) <= limit or len(rest) <= 1:
            return left_truncate(ids, limit, "the conversation"), system + rest
        rest = rest[2:] if len(rest) > 2 else rest[-1:]  # drop the oldest user turn and its answer


# ----------------------------------------------------------------------------------------------------------------------
# generation for many prompts (answers to score, comparisons to label, evaluation)


@torch.no_grad()
def generate_batched(model, prompts, rt, pad_id, stop_id, max_new_tokens, temperature=0.0, top_k=None, top_p=None,
                     batch_size=64, generator=None):
    """Answers to prompts (token lists of any lengths), batch_size at a time, each batch left-padded into one
    KV-cache generation. Returns [(new tokens cut before stop_id, finished: stop_id was generated)] in prompt order.
    A prompt longer than the context minus max_new_tokens keeps its last tokens (with a warning)."""
    limit = model.config.block_size - max_new_tokens
    if limit <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context of "
                         f"{model.config.block_size}")
    cut = sum(len(p) > limit for p in prompts)
    if cut:
        print(f"warning: {cut} prompts are longer than {limit} tokens; keeping their last {limit}", file=sys.stderr)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch: less padding
    results = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idxs = order[s:s + batch_size]
        batch = [prompts[i][-limit:] for i in idxs]
        T = max(len(p) for p in batch)
        x = torch.tensor([[pad_id] * (T - len(p)) + p for p in batch], device=rt.device)        # (B, T) left-padded
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in batch], device=rt.device)
        with rt.autocast:
            out, _ = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                    eos_id=stop_id, pad_id=pad_id, attention_mask=mask, generator=generator)
        for i, row in zip(idxs, out[:, T:].tolist()):
            finished = stop_id in row
            results[i] = (row[:row.index(stop_id)] if finished else row, finished)
    return results


# ----------------------------------------------------------------------------------------------------------------------
# logging


class Logger:
    """One line per step on stdout, and the same numbers as a JSON line in out_dir/log.jsonl (rank 0 only)."""

    def __init__(self, out_dir, total_steps, master=True, resume_step=None):
        self.path = os.path.join(out_dir, "log.jsonl")
        self.total, self.master = total_steps, master
        self.t0 = time.time()
        self.first_step = None
        if master:
            os.makedirs(out_dir, exist_ok=True)
            lines = open(self.path).readlines() if resume_step is not None and os.path.exists(self.path) else []
            with open(self.path, "w") as f:  # a new run starts a new log; a resumed one keeps its lines up to the
                f.writelines(l for l in lines if json.loads(l)["step"] <= resume_step)  # checkpoint's step

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
