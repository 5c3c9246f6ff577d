"""
The reward model (RM): InstructGPT's second stage. A GPT trunk with a scalar head learns, from ranked comparisons,
to score an answer the way the labelers would.

    python sample.py --ckpt=out/sft --prompts=data/assistant/prompts_label.jsonl --num_samples=6 --temperature=0.7 \
        --max_new_tokens=64 --out=out/samples.jsonl             # K answers per prompt from the SFT model
    python data/assistant/label.py --samples=out/samples.jsonl    # the labeler ranks them -> prefs_*.jsonl
    python reward.py                                              # out/sft -> out/reward (seconds on a CPU)

    from reward import load_reward_model                          # for ppo.py, dpo.py, sample.py, evaluate.py
    rm, ckpt = load_reward_model("out/reward"); scores = rm(idx, attention_mask)   # (B,)
    python sample.py --ckpt=out/sft --best_of=8 --reward=out/reward --chat         # best-of-n (6)

Details, numbered where the code implements them; evidence: docs/experiments.md; details at length: docs/reference.md.
 1. RM = the SFT model's trunk + a linear head to one scalar, read at the last real token of prompt + response
    (the <|end|> closing the answer, or the last token of an answer cut by the length limit). The attention mask
    locates it, so left padding, right padding and no padding give the same score; never a pad.
 2. Loss for a prompt with K ranked answers (InstructGPT eq. 1): the mean over its untied pairs (w ranked better
    than l) of -log sigmoid(r(x, y_w) - r(x, y_l)). All K answers of a prompt go in the same batch, so the K-choose-2
    comparisons share K forward passes, and every prompt weighs the same however many pairs it has.
 3. One epoch (InstructGPT: more overfits an RM), AdamW with warmup and cosine decay, dropout off. The world has
    2200 labeling prompts: an RM generalises an axis across prompts, not across more passes over the same ones.
 4. Normalisation, after training: the head's weight and bias are multiplied by 1 / std of the RM's scores of fresh
    answers of the SFT policy at PPO's temperature and length limit (norm_temperature, norm_max_new_tokens; keep
    them equal to ppo.py's) to the first norm_prompts prompts of prompts_rl.jsonl: those answers then have std 1
    (lm-human-preferences and N+ normalise on policy samples), so PPO's value clip, KL coefficient and
    missing_eos_penalty (1 = one std) mean the same whatever scale the RM learned. Then the bias is shifted so that
    the demonstrations (sft_train.jsonl's first 1000 records' final answers) score 0 on average (InstructGPT):
    a constant the advantages never see (the value baseline and the group means absorb it), it makes a logged score
    read against the demonstrations. Both are folded into the head; the checkpoint records them (gain, bias_shift:
    the amount subtracted from the bias).
 5. Held-out pairwise accuracy on prefs_val.jsonl (ranked without labeler noise), next to a "longer answer wins"
    baseline on the same pairs, is printed and saved in the checkpoint (stage "reward").
 6. Best-of-n (WebGPT's rejection sampling, Nakano et al. 2021): n answers to a prompt sampled in one batched
    generation, and the one the RM scores highest; used by sample.py --best_of and evaluate.py --best_of.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (LM_STAGES, Logger, clip_and_step, check_messages, cleanup, configure_optimizer,
                    generate_batched, get_lr, load_checkpoint, model_from_checkpoint, parse_config, read_jsonl,
                    save_checkpoint, setup, source_of, unwrap, wrap)
from model import GPT, GPTConfig
from tokenizer import get_tokenizer


@dataclass
class Config:
    data_dir: str = "data/assistant"  # prefs_train/val.jsonl (label.py); sft_train.jsonl, prompts_rl.jsonl (for 4)
    init_from: str = "out/sft"        # the SFT checkpoint whose trunk the RM starts from
    out_dir: str = "out/reward"       # checkpoint and log.jsonl go here
    epochs: int = 1                   # (3)
    batch_prompts: int = 8            # prompts per step per process, each with all its K answers
    norm_prompts: int = 256           # (4) RL prompts whose fresh SFT answers set the RM's unit
    norm_max_new_tokens: int = 64     # (4) their length limit: PPO's
    norm_temperature: float = 1.0     # (4) their sampling temperature: PPO's
    learning_rate: float = 3e-4       # peak learning rate
    min_lr: float = 3e-5              # learning rate at the end of the cosine decay
    warmup_iters: int = 10            # linear warmup steps
    weight_decay: float = 0.1         # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0            # clip the global gradient norm; 0 disables
    log_interval: int = 10            # steps between log lines
    seed: int = 1337
    device: str = "auto"              # auto (cuda if available), cpu, cuda, mps
    dtype: str = "auto"               # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False             # torch.compile the model (GPUs)


class RewardModel(nn.Module):
    """(1) GPT trunk + scalar head. forward(idx (B, T), attention_mask (B, T)) -> scores (B,)."""

    def __init__(self, config):
        super().__init__()
        self.gpt = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(config.n_embd + 1))
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, attention_mask):
        h = self.gpt.hidden_states(idx, attention_mask)                      # (B, T, C)
        last = idx.size(1) - 1 - attention_mask.long().flip(1).argmax(1)     # (B,) last position whose mask is 1
        return self.head(h[torch.arange(idx.size(0), device=idx.device), last]).squeeze(-1)  # (B,)


def load_reward_model(path):
    """The RM of a reward checkpoint, in eval mode on the CPU: ppo.py, dpo.py, sample.py and evaluate.py use this."""
    ckpt = load_checkpoint(path, stages=("reward",), hint="train one with reward.py")
    rm = RewardModel(GPTConfig(**{**ckpt["model_args"], "dropout": 0.0}))
    rm.load_state_dict(ckpt["model"])
    return rm.eval(), ckpt


def encode_answer(tok, messages, response, finished, block_size):
    """prompt + response (+ <|end|> when the answer ended by itself) as ids, keeping the last block_size tokens.
    response: text, or the token ids the policy sampled (sample.py's response_ids), which are used as they are:
    decoding and re-encoding could turn a special token into its literal name or a broken byte into U+FFFD."""
    ids = response if isinstance(response, list) else tok.encode(response)
    return (tok.render_prompt(messages) + ids + ([tok.end_id] if finished else []))[-block_size:]


def pad_right(seqs, pad_id, device):
    """Token lists -> idx, attention_mask (B, T_max), padded on the right."""
    T = max(len(s) for s in seqs)
    idx = torch.tensor([s + [pad_id] * (T - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs], device=device)
    return idx, mask


@torch.no_grad()
def score_sequences(rm, seqs, pad_id, rt, batch_size=64):
    """RM scores (a list of floats, in the order of seqs) of token lists, batch_size at a time, sorted by length so
    that a batch pads little."""
    rm.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    for s in range(0, len(order), batch_size):
        idxs = order[s:s + batch_size]
        idx, mask = pad_right([seqs[i] for i in idxs], pad_id, rt.device)
        with rt.autocast:
            scores = rm(idx, mask).float().tolist()
        for i, score in zip(idxs, scores):
            out[i] = score
    return out


@torch.no_grad()
def best_of_n(policy, rm, prompts, n, pad_id, end_id, rt, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
              batch_size=64, generator=None):
    """(6) For each prompt (a token list): n answers sampled together (the n copies of a prompt share a generation
    batch), and the RM's favourite. Returns [(answer tokens, finished, score, [(tokens, finished, score)] * n)]."""
    many = [p for p in prompts for _ in range(n)]
    out = generate_batched(policy, many, rt, pad_id, end_id, max_new_tokens, temperature, top_k, top_p,
                           max(batch_size, n), generator)
    block = rm.gpt.config.block_size
    scores = score_sequences(rm, [(p + ids + [end_id] * fin)[-block:] for p, (ids, fin) in zip(many, out)], pad_id,
                             rt, batch_size)
    picks = []
    for i in range(len(prompts)):
        cands = [(ids, fin, s) for (ids, fin), s in zip(out[i * n:(i + 1) * n], scores[i * n:(i + 1) * n])]
        picks.append((*max(cands, key=lambda c: c[2]), cands))
    return picks


def batch_scores(model, seqs, pad_id, rt):
    """The scores (len(seqs),) of a training batch, with their graph: the shorter and the longer half of the
    sequences each padded to its own longest, two forwards instead of one padded to the batch's longest (fewer
    tokens, the same scores); the loss needs every answer of a prompt, so both halves meet before one backward."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    parts = []
    for half in (order[:len(order) // 2], order[len(order) // 2:]):
        idx, mask = pad_right([seqs[i] for i in half], pad_id, rt.device)  # (B / 2, T of the half)
        with rt.autocast:
            parts.append(model(idx, mask).float())
    return torch.cat(parts)[torch.tensor(order, device=rt.device).argsort()]  # back in seqs' order


def kway_loss(scores, ranks):
    """(2) One prompt: scores (K,), ranks (K,) with 0 = best -> (mean over untied pairs of -log sigmoid(r_w - r_l),
    number of pairs). better[i, j] is True when answer i is ranked above answer j; ties make no pair."""
    better = ranks.unsqueeze(1) < ranks.unsqueeze(0)       # (K, K)
    diff = scores.unsqueeze(1) - scores.unsqueeze(0)       # (K, K): r_i - r_j
    n = better.sum()
    return -F.logsigmoid(diff[better]).sum() / n.clamp(min=1), n


def check_comparison(record, tok=None):
    """A record of K >= 2 ranked answers. Its optional "response_ids" (the sampled tokens: sample.py writes them,
    label.py keeps them) must be one token list per response that decodes to it (checked when tok is given)."""
    check_messages(record, "user")
    responses, ranks = record.get("responses"), record.get("ranks")
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        raise ValueError('expected "responses": a list of at least 2 strings')
    if not isinstance(ranks, list) or len(ranks) != len(responses) or not all(isinstance(r, int) for r in ranks):
        raise ValueError(f'expected "ranks": one integer per response ({len(responses)}), 0 = best')
    if len(set(ranks)) < 2:
        raise ValueError("all responses are tied: a comparison needs at least one better and one worse answer")
    ids = record.get("response_ids")
    if ids is None or tok is None:
        return
    if not (isinstance(ids, list) and len(ids) == len(responses) and all(
            isinstance(a, list) and all(isinstance(t, int) and 0 <= t < tok.vocab_size for t in a) for a in ids)):
        raise ValueError(f'expected "response_ids": one list of token ids (0 .. {tok.vocab_size - 1}) per response '
                         f'({len(responses)})')
    if [tok.decode(a) for a in ids] != responses:
        raise ValueError('"response_ids" do not decode to "responses" (were the answers edited?): delete '
                         'response_ids to train on the text')


def load_comparisons(path, tok, block_size):
    """[(sequences of the K answers, ranks tensor (K,), response lengths)] of a comparisons file. The answers are
    the token ids the policy sampled when the record has them, else its text encoded (a hand-written file, HH)."""
    out = []
    hint = "collect comparisons with data/assistant/label.py"
    for r in read_jsonl(path, lambda r: check_comparison(r, tok), hint=hint):
        finished = r.get("finished", [True] * len(r["responses"]))
        answers = r.get("response_ids", r["responses"])
        seqs = [encode_answer(tok, r["messages"], y, f, block_size) for y, f in zip(answers, finished)]
        out.append((seqs, torch.tensor(r["ranks"]), [len(y) for y in r["responses"]]))
    return out


def pairwise_accuracy(rm, comparisons, pad_id, rt):
    """(5) Over all untied pairs: how often the RM scores the better answer higher (a tie counts half), and how
    often the longer answer is the better one (the same half for equal lengths)."""
    scores = torch.tensor(score_sequences(rm, [s for seqs, _, _ in comparisons for s in seqs], pad_id, rt))
    right = longer = pairs = 0.0
    k = 0
    for seqs, ranks, lengths in comparisons:
        s, L = scores[k:k + len(seqs)], torch.tensor(lengths, dtype=torch.float)
        k += len(seqs)
        better = ranks.unsqueeze(1) < ranks.unsqueeze(0)
        pairs += better.sum().item()
        right += (torch.sign(s.unsqueeze(1) - s.unsqueeze(0))[better] * 0.5 + 0.5).sum().item()
        longer += (torch.sign(L.unsqueeze(1) - L.unsqueeze(0))[better] * 0.5 + 0.5).sum().item()
    return right / max(pairs, 1), longer / max(pairs, 1), int(pairs)


def policy_samples(policy, tok, records, max_new_tokens, seed, rt, temperature=1.0):
    """(4) Fresh answers of the SFT policy to RL prompts at PPO's temperature and length limit: token lists prompt +
    answer (+ <|end|> if it finished), the prompt cut as PPO cuts it."""
    prompts = [tok.render_prompt(r["messages"]) for r in records]
    gen = torch.Generator(device=rt.device).manual_seed(seed)
    out = generate_batched(policy.eval(), prompts, rt, tok.pad_id, tok.end_id, max_new_tokens,
                           temperature=temperature, generator=gen)
    limit = policy.config.block_size - max_new_tokens
    return [p[-limit:] + a + ([tok.end_id] if f else []) for p, (a, f) in zip(prompts, out)]


def mean_demonstration_score(rm, tok, path, rt, block_size, limit=1000):
    """(4) The RM's mean score of the demonstrations' final assistant answers (the first `limit` of them)."""
    records = read_jsonl(path, check_messages, hint="run python data/assistant/prepare.py")[:limit]
    seqs = [encode_answer(tok, r["messages"][:-1], r["messages"][-1]["content"], True, block_size)
            for r in records if r["messages"][-1]["role"] == "assistant"]
    scores = score_sequences(rm, seqs, tok.pad_id, rt)
    return sum(scores) / len(scores)


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    parent = load_checkpoint(cfg.init_from, stages=LM_STAGES, hint="the RM starts from the SFT model: run sft.py")
    tok = get_tokenizer(parent["tokenizer"])
    block = parent["model_args"]["block_size"]
    train = load_comparisons(os.path.join(cfg.data_dir, "prefs_train.jsonl"), tok, block)
    val = load_comparisons(os.path.join(cfg.data_dir, "prefs_val.jsonl"), tok, block)
    rl_prompts = read_jsonl(os.path.join(cfg.data_dir, "prompts_rl.jsonl"), lambda r: check_messages(r, "user"),
                            hint="the RM's unit (4) is set on the RL prompts: run python data/assistant/prepare.py")
    if not 0 < cfg.norm_max_new_tokens < block:
        raise SystemExit(f"--norm_max_new_tokens={cfg.norm_max_new_tokens} leaves no room for a prompt in a context of "
                         f"{block}: use PPO's --max_new_tokens (4)")
    if cfg.norm_prompts < 2 or len(rl_prompts) < 2:
        raise SystemExit(f"--norm_prompts={cfg.norm_prompts} with {len(rl_prompts)} prompts in prompts_rl.jsonl: the "
                         f"RM's unit (4) is a standard deviation over at least 2 answers")
    rl_prompts = rl_prompts[:cfg.norm_prompts]

    rm = RewardModel(GPTConfig(**{**parent["model_args"], "dropout": 0.0}))  # (3) dropout off
    sft = model_from_checkpoint(parent, dropout=0.0)                         # the SFT policy: (1) and (4)
    rm.gpt.load_state_dict(sft.state_dict())                                 # (1) the SFT trunk
    rm.to(rt.device)
    optimizer = configure_optimizer(rm, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2), rt.device_type)
    model = wrap(rm, rt, cfg.compile)
    per_step = cfg.batch_prompts * rt.world_size
    steps_per_epoch = len(train) // per_step
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train)} training comparisons are fewer than one batch of {per_step} prompts")
    max_iters = cfg.epochs * steps_per_epoch
    if rt.master:
        print(f"config: {json.dumps(asdict(cfg))}")
        print(f"data: {len(train)} train / {len(val)} val prompts with ranked answers, {max_iters} steps")
    logger = Logger(cfg.out_dir, max_iters, rt.master)
    acc0, length_acc, n_pairs = pairwise_accuracy(rm, val, tok.pad_id, rt)
    logger.log(0, val_accuracy=acc0, length_baseline=length_acc)

    step, t0 = 0, time.time()
    rm.train()
    while step < max_iters:
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        chunk = [train[j] for j in order[i * per_step:(i + 1) * per_step][rt.rank::rt.world_size]]
        lr = get_lr(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        scores = batch_scores(model, [s for seqs, _, _ in chunk for s in seqs], tok.pad_id, rt)
        losses, k = [], 0
        for seqs, ranks, _ in chunk:  # (2) each prompt's mean over its pairs, then the mean over prompts
            losses.append(kway_loss(scores[k:k + len(seqs)], ranks.to(rt.device))[0])
            k += len(seqs)
        loss = torch.stack(losses).mean()
        rt.scaler.scale(loss).backward()
        clip_and_step(model, optimizer, rt, cfg.grad_clip, loss.item(), step, cfg.out_dir)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.log_interval == 0 or step == max_iters:
            logger.log(step, loss=loss.item(), lr=lr, ms_per_step=(time.time() - t0) * 1000 / step)

    acc, length_acc, n_pairs = pairwise_accuracy(rm, val, tok.pad_id, rt)
    sft.to(rt.device)  # (4) the policy PPO starts from, on its prompts
    samples = policy_samples(sft, tok, rl_prompts, cfg.norm_max_new_tokens, cfg.seed, rt, cfg.norm_temperature)
    std = torch.tensor(score_sequences(rm, samples, tok.pad_id, rt)).std().item()
    gain = 1.0 / max(std, 1e-6)
    with torch.no_grad():
        rm.head.weight *= gain
        rm.head.bias *= gain
    shift = mean_demonstration_score(rm, tok, os.path.join(cfg.data_dir, "sft_train.jsonl"), rt, block)
    with torch.no_grad():
        rm.head.bias -= shift  # (4) demonstrations now score 0 on average
    logger.log(step, val_accuracy=acc, length_baseline=length_acc, val_pairs=n_pairs, gain=gain, bias_shift=shift)
    if rt.master:
        save_checkpoint(cfg.out_dir, {
            "model": unwrap(model).state_dict(), "model_args": {**asdict(rm.gpt.config)}, "tokenizer": tok.name,
            "stage": "reward", "parent": source_of(cfg.init_from), "config": asdict(cfg), "step": step,
            "val_accuracy": acc, "length_baseline_accuracy": length_acc, "val_pairs": n_pairs, "gain": gain,
            "bias_shift": shift, "train_comparisons": len(train)})
        print(f"reward model: held-out pairwise accuracy {acc:.3f} on {n_pairs} pairs (before training {acc0:.3f}); "
              f"longer-answer baseline {length_acc:.3f}; scaled by {gain:.3f} (std 1 on SFT's answers to "
              f"{len(samples)} RL prompts), shifted by "
              f"{-shift:+.3f} (demonstrations' mean 0) -> {cfg.out_dir}")
    cleanup(rt)
