"""
Supervised fine-tuning (SFT): InstructGPT's first stage. A pretrained GPT, which only continues text, learns to
follow instructions by imitating demonstrations written in the chat format.

    python data/assistant/prepare.py && python pretrain.py --config=config/pretrain_assistant.json
    python sft.py                                        # out/pretrain -> out/sft (~2 minutes on 2 CPU cores)
    python sft.py --resume                               # continue an interrupted run
    python sft.py --scratch --out_dir=out/sft_scratch    # ablation: same architecture, no pretraining
    python sample.py --ckpt=out/sft --chat               # talk to it
    torchrun --standalone --nproc_per_node=2 sft.py      # DDP, same global batch as one process
    python sft.py --config=config/hh_sft.json            # the real-data recipe: OpenAI's GPT-2 on HH-RLHF (a GPU)

Details, numbered where the code implements them; evidence: docs/experiments.md; details at length: docs/reference.md.
 1. Data: sft_train.jsonl / sft_val.jsonl, records {"messages": [...]} with at least one assistant turn; a bad record
    stops the run before anything is written, naming the file and line.
 2. Loss mask (InstructGPT; DESIGN.md): next-token cross-entropy on the content of every assistant turn and on the
    <|end|> that closes it (so the model learns to stop); target -1 on system and user turns and role tokens.
 3. The loss is averaged over the unmasked tokens of the whole global batch, not per micro-batch or per sequence
    (common.accumulate_gradients); a batch with none gives 0, not NaN.
 4. Sequences are padded on the right, one conversation per row, never packed: causal attention then never lets a
    token see another conversation or a pad (pads come after every real token of their row), so no mask is needed.
 5. Cosine decay with warmup, peak learning rate 1e-3 (a third of pretraining's). Deviation: 3 epochs, not
    InstructGPT's 16: a small model overfits sooner. At 1e-3 SFT forgets much
    of what only the corpus states; a lower rate forgets less but samples worse answers, and the RM learns from
    those samples' comparisons, so 1e-3 stays. No dropout (InstructGPT: residual dropout 0.2 at 1.3B-175B): the
    0.85M model has no capacity to spare, and dropout's masks are costly on a CPU; --dropout=0.1 for larger models.
 6. Data order is a function of (seed, epoch): --resume continues exactly where the run stopped. Batches are
    plain shuffles (no grouping by length across steps: here length tracks the instruction family, and batches of
    one family are not the i.i.d. batches SFT assumes). Within a step the batch is sorted by length before it is cut
    into micro-batches (--grad_accum): detail 3 makes the step's gradient the same however it is cut, and a long
    conversation then pads only the rows of its own micro-batch.
 7. The checkpoint has stage "sft" and names its parent (the pretrained checkpoint); the tokenizer must be the data's.
 8. Rejection-sampling fine-tuning (Llama 2 section 3.2.3; RAFT, Dong et al. 2023), the cheapest RM-based method: a
    file of sample.py --prompts --best_of=N --reward=RM records (a prompt and the RM's pick of N answers) is read as
    the demonstrations of the picks that ended by themselves, the loss on the pick alone (a prompt's earlier
    answers are context, not targets). run.sh --full continues SFT on the RM's best of 8 of the SFT model's answers
    to each labeling prompt: evaluate.py's rft row. distill.py's records (context distillation) are read the same way.
 9. Tail averaging (Polyak & Juditsky 1992; SWA, Izmailov et al. 2018): --tail_average=F ships the mean of the
    weights after each of the last F of the steps. At a constant learning rate the last step's weights are one draw
    around a minimum that the order of the last batches picks; their mean depends on the order far less. The mean is
    kept beside the trained weights (the checkpoint holds both, so --resume ends with the same mean); val_loss is the
    shipped weights'. run.sh's distillation averages its last half (0.5); off by default.
"""

import copy
import json
import os
import time
from dataclasses import asdict, dataclass

import torch

from common import (LM_STAGES, Logger, accumulate_gradients, clip_and_step, check_messages, cleanup,
                    configure_optimizer, get_lr, load_checkpoint, model_from_checkpoint, parse_config, read_jsonl,
                    rng_state, save_checkpoint, set_rng_state, setup, source_of, wrap)
from model import GPT
from tokenizer import get_tokenizer


@dataclass
class Config:
    data_dir: str = "data/assistant"  # sft_train.jsonl, sft_val.jsonl and meta.json (data/assistant/prepare.py)
    init_from: str = "out/pretrain"   # the checkpoint to start from, or gpt2.. / a Hugging Face GPT-2 directory
    scratch: bool = False             # ablation: init_from's architecture with fresh random weights
    out_dir: str = "out/sft"          # checkpoint and log.jsonl go here
    resume: bool = False              # continue from out_dir/ckpt.pt
    epochs: float = 3.0               # passes over the demonstrations (5); a fraction stops mid-epoch
    batch_size: int = 16              # conversations per micro-batch per process
    grad_accum: int = 2               # micro-batches per step per process: 32 conversations a step, cut in two by
                                      # length (6), which pads less than one batch of 32 (the same gradient)
    learning_rate: float = 1e-3       # peak learning rate (5)
    min_lr: float = 1e-4              # learning rate at the end of the cosine decay
    warmup_iters: int = 20            # linear warmup steps
    weight_decay: float = 0.1         # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0            # clip the global gradient norm; 0 disables
    dropout: float = 0.0              # residual / attention dropout while fine-tuning (5)
    eval_interval: int = 100          # steps between val-loss evaluations and checkpoints
    log_interval: int = 20            # steps between log lines
    seed: int = 1337
    device: str = "auto"              # auto (cuda if available), cpu, cuda, mps
    dtype: str = "auto"               # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False             # torch.compile the model (GPUs)
    tail_average: float = 0.0         # ship the mean of the weights over this last fraction of the steps (9); 0: off


def check_demonstration(record):  # (1, 8)
    check_messages(record)
    if "responses" in record:  # sample.py's record: a prompt and its answers
        if not (isinstance(record["responses"], list) and record["responses"] and isinstance(record["responses"][0],
                                                                                              str)):
            raise ValueError('expected "responses" to be a non-empty list of answers, as sample.py --prompts writes')
    elif not any(m["role"] == "assistant" for m in record["messages"]):
        raise ValueError("expected at least one assistant turn in a demonstration (there is nothing to learn from)")


def load_demonstrations(path, tok, block_size):
    """Rendered (ids, targets) pairs of a demonstrations file; conversations longer than the context are dropped.
    (8) A sample.py record is the demonstration of its first answer, if that answer ended by itself: only that
    answer (and its <|end|>) is trained."""
    records = read_jsonl(path, check_demonstration, hint="run python data/assistant/prepare.py")
    rendered = []
    for r in records:
        if "responses" not in r:
            rendered.append(tok.render_conversation(r["messages"]))
        elif (r.get("finished") or [True])[0]:  # (8) the prompt is context: only its answer is trained
            n = len(tok.render_prompt(r["messages"]))  # ids up to <|assistant|>; the answer's first target at n - 1
            ids, tg = tok.render_conversation(r["messages"] + [{"role": "assistant", "content": r["responses"][0]}])
            rendered.append((ids, [-1] * (n - 1) + tg[n - 1:]))
    kept = [r for r in rendered if len(r[0]) <= block_size]
    if len(kept) < len(rendered):
        print(f"warning: {path}: dropped {len(rendered) - len(kept)} conversations longer than {block_size} tokens")
    return kept


def collate(examples, pad_id, device):
    """(4) Right-pad a list of (ids, targets) into x, y of shape (B, T_max); pads get target -1."""
    T = max(len(ids) for ids, _ in examples)
    x = torch.tensor([ids + [pad_id] * (T - len(ids)) for ids, _ in examples], device=device)
    y = torch.tensor([tg + [-1] * (T - len(tg)) for _, tg in examples], device=device)
    return x, y


@torch.no_grad()
def evaluate_loss(model, examples, batch_size, pad_id, rt):
    """Mean loss over every trained token of the examples (token-weighted, like the training loss)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        x, y = collate(examples[i:i + batch_size], pad_id, rt.device)
        with rt.autocast:
            _, loss = model(x, y)
        n = int((y != -1).sum())
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / max(count, 1)


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    meta_path = os.path.join(cfg.data_dir, "meta.json")
    if not os.path.exists(meta_path):
        raise SystemExit(f"{meta_path} not found: run python data/assistant/prepare.py (or your data's prepare.py)")
    with open(meta_path) as f:
        data_tokenizer = json.load(f)["tokenizer"]

    # model: the pretrained parent, or the run being resumed
    source = cfg.out_dir if cfg.resume else cfg.init_from
    ckpt = load_checkpoint(source, stages=("sft",) if cfg.resume else LM_STAGES, tokenizer=data_tokenizer,
                           hint="SFT starts from a language model: run pretrain.py first")  # (7)
    model = model_from_checkpoint(ckpt, dropout=cfg.dropout)
    if not 0 <= cfg.tail_average <= 1:
        raise SystemExit(f"--tail_average is the fraction of the steps whose weights are averaged, in [0, 1]; got "
                         f"{cfg.tail_average}")
    if cfg.scratch and not cfg.resume:
        model = GPT(model.config)  # the same architecture, fresh weights
    tok = get_tokenizer(ckpt["tokenizer"])
    train = load_demonstrations(os.path.join(cfg.data_dir, "sft_train.jsonl"), tok, model.config.block_size)
    val = load_demonstrations(os.path.join(cfg.data_dir, "sft_val.jsonl"), tok, model.config.block_size)

    per_rank = cfg.batch_size * cfg.grad_accum
    global_batch = per_rank * rt.world_size
    steps_per_epoch = len(train) // global_batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train)} demonstrations are fewer than one global batch of {global_batch}")
    max_iters = max(1, round(cfg.epochs * steps_per_epoch))
    # (9) the weights after steps tail_start + 1 .. max_iters are averaged: avg holds their running mean, n_avg of them
    tail_start, avg, n_avg = max_iters - round(cfg.tail_average * max_iters), None, 0
    model.to(rt.device)
    if cfg.resume and ckpt.get("n_averaged"):  # the checkpoint ships the mean; the trained weights go on training
        avg, n_avg = copy.deepcopy(model), ckpt["n_averaged"]
        model.load_state_dict(ckpt["trained_model"])
    optimizer = configure_optimizer(model, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    rt.device_type)
    step = 0
    if cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # fp16's loss scale, so that a resumed run goes on exactly
            rt.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], rt)
        step = ckpt["step"]
    parent = ckpt["parent"] if cfg.resume else (None if cfg.scratch else source_of(cfg.init_from))
    raw, model = model, wrap(model, rt, cfg.compile)

    if rt.master:
        print(f"config: {json.dumps(asdict(cfg))}")
        print(f"model: {raw.num_params() / 1e6:.2f}M parameters from {'scratch' if cfg.scratch else source}")
        print(f"data: {len(train)} train / {len(val)} val conversations, {steps_per_epoch} steps per epoch, "
              f"{max_iters} steps")
    logger = Logger(cfg.out_dir, max_iters, rt.master, step if cfg.resume else None)

    def checkpoint(val_loss):
        rng = rng_state(rt)  # every rank's, so that a resumed DDP run draws the same dropout masks
        if rt.master:
            save_checkpoint(cfg.out_dir, {
                "model": (avg if n_avg else raw).state_dict(), "model_args": asdict(raw.config),
                "tokenizer": tok.name, "stage": "sft", "parent": parent, "config": asdict(cfg), "step": step,
                "optimizer": optimizer.state_dict(), "scaler": rt.scaler.state_dict(), "rng": rng,
                "val_loss": val_loss, "n_averaged": n_avg, "trained_model": raw.state_dict() if n_avg else None})

    if step == 0:
        logger.log(0, val_loss=evaluate_loss(raw, val, cfg.batch_size, tok.pad_id, rt))
    model.train()
    t_last, step_last, tokens = time.time(), step, 0
    order_epoch = None
    while step < max_iters:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != order_epoch:  # (6) a shuffle per epoch, a function of the seed alone
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
            order_epoch = epoch
        batch = order[i * global_batch:(i + 1) * global_batch][rt.rank * per_rank:(rt.rank + 1) * per_rank]
        batch = sorted(batch, key=lambda j: len(train[j][0]))  # (6) similar lengths share a micro-batch
        micro = [collate([train[j] for j in batch[k:k + cfg.batch_size]], tok.pad_id, rt.device)
                 for k in range(0, per_rank, cfg.batch_size)]
        tokens += sum(x.numel() for x, _ in micro)
        lr = get_lr(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, max_iters)  # (5)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = accumulate_gradients(model, micro, rt)  # (2) (3)
        clip_and_step(model, optimizer, rt, cfg.grad_clip, loss, step, cfg.out_dir)  # stops before a NaN lands
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step > tail_start:  # (9)
            if n_avg == 0:
                avg = copy.deepcopy(raw)
            n_avg += 1
            with torch.no_grad():
                for a, w in zip(avg.parameters(), raw.parameters()):
                    a.lerp_(w, 1 / n_avg)  # the running mean: a += (w - a) / n
        if step % cfg.log_interval == 0 or step == max_iters:
            dt = (time.time() - t_last) / (step - step_last)
            logger.log(step, loss=loss, lr=lr, epoch=epoch, ms_per_step=dt * 1000,
                       tok_per_s=tokens * rt.world_size / (dt * (step - step_last)))
            t_last, step_last, tokens = time.time(), step, 0
        if step % cfg.eval_interval == 0 or step == max_iters:
            val_loss = evaluate_loss(avg if n_avg else raw, val, cfg.batch_size, tok.pad_id, rt)
            logger.log(step, val_loss=val_loss)
            checkpoint(val_loss)
            t_last, step_last, tokens = time.time(), step, 0
    cleanup(rt)
