"""
Direct preference optimisation (DPO, Rafailov et al. 2023): the SFT policy learns from the same ranked comparisons
the reward model learned from, with no reward model and no sampling. The policy's log-probability ratio to the SFT
model acts as an implicit reward, trained with the Bradley-Terry loss the RM uses.

    python dpo.py                                      # out/sft + data/assistant/prefs_*.jsonl -> out/dpo
    python dpo.py --beta=0.3 --out_dir=out/dpo_b03     # a stronger pull toward the reference
    python dpo.py --resume                             # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 dpo.py    # DDP, same global batch as one process

    from dpo import dpo_loss                           # the pure loss, on (B,) sequence log-probs

Details, numbered where the code implements them; evidence: docs/experiments.md; details at length: docs/reference.md.
 1. Pairs, grouped by comparison (InstructGPT's RM, sec. 3.5, as reward.py (2)): every untied pair (w ranked better
    than l) of each K-way comparison in prefs_train.jsonl, each distinct pair once (ties make no pair); a step is
    batch_size comparisons, each one's distinct answers in one forward pass, its loss the mean over its pairs, so DPO
    and the RM weigh the same data alike. Shuffled pairs would weigh a comparison by its number of pairs (1 to 36 at
    K = 9) and overfit (InstructGPT). An answer is the tokens the policy sampled ("response_ids") when the record has
    them, else its text encoded: decoding is lossy, so the text alone could train on sequences never sampled.
 2. Loss (DPO eq. 7): -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]),
    beta = 0.1, averaged as (1) says. The implicit rewards beta * (log pi - log pi_ref) of the chosen and rejected
    answers are logged: their margin and how often the chosen one is higher (accuracy). --label_smoothing=eps is
    conservative DPO (Mitchell 2023, as TRL's label_smoothing): each label is taken as flipped with probability eps,
    -(1 - eps) log sigmoid(h) - eps log sigmoid(-h); 0 by default: at eps = 0.1, the labeler's noise rate, the
    greedy answers hardly changed.
 3. Sequence log-probs are sums over the response tokens only (the answer's content and its closing <|end|> when
    it finished), never the prompt or a pad: the prompt's log-prob is the same under both answers and cancels in
    the loss only if it is left out of both.
 4. Reference = the SFT model, frozen; its log-probs are computed once for every pair before training.
 5. Policy initialised from SFT, dropout off (so that at step 0 policy = reference exactly: loss log 2, margins 0).
 6. Held-out preference accuracy of the implicit reward on prefs_val.jsonl, before and after; checkpoint stage "dpo".
 7. Data order is a function of (seed, epoch); checkpoints every ckpt_interval steps and at each epoch's end hold
    the weights, the optimizer, the RNG state and the step: --resume after a kill continues exactly where the last
    checkpoint stopped, mid-epoch too (the same weights, bit for bit). DDP shards each global batch by rank.
 8. Learning rate 3e-6 on the embedded world (the DPO paper: 1e-6 at 1.3B-6B). Too high, the policy loses both
    answers of its pairs, not only the worse one: it drifts far from SFT and starts answering harmful requests.
"""

import json
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from common import (LM_STAGES, Logger, answer_logps, cleanup, clip_and_step, configure_optimizer, get_lr,
                    load_checkpoint, model_from_checkpoint, parse_config, read_jsonl, rng_state, save_checkpoint,
                    set_rng_state, setup, source_of, unwrap, wrap)
from reward import check_comparison, pad_right
from tokenizer import get_tokenizer


@dataclass
class Config:
    data_dir: str = "data/assistant"  # prefs_train.jsonl and prefs_val.jsonl (data/assistant/label.py)
    init_from: str = "out/sft"        # policy and reference (4, 5)
    out_dir: str = "out/dpo"          # checkpoint and log.jsonl go here
    resume: bool = False              # continue from out_dir/ckpt.pt
    beta: float = 0.1                 # (2) DPO's temperature: higher keeps the policy nearer the reference
    epochs: int = 1                   # passes over the comparisons (a second one drifts further, for a worse policy)
    batch_size: int = 8               # comparisons (prompts) per step per process, each with all its pairs (1)
    label_smoothing: float = 0.0      # conservative DPO: the chance a label is flipped (2)
    learning_rate: float = 3e-6       # peak learning rate (8)
    min_lr: float = 1e-6              # learning rate at the end of the cosine decay
    warmup_iters: int = 10            # linear warmup steps
    weight_decay: float = 0.0         # on matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0            # clip the global gradient norm; 0 disables
    log_interval: int = 10            # steps between log lines
    ckpt_interval: int = 50           # steps between checkpoints (7); an epoch's end writes one too
    seed: int = 1337
    device: str = "auto"              # auto (cuda if available), cpu, cuda, mps
    dtype: str = "auto"               # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False             # torch.compile the policy (GPUs)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1,
             label_smoothing=0.0):
    """(2) All (B,) summed sequence log-probs -> (mean loss, chosen rewards (B,), rejected rewards (B,)), the
    rewards being DPO's implicit beta * (log pi - log pi_ref), detached. label_smoothing eps: each pair's label is
    taken as flipped with probability eps (conservative DPO), -(1 - eps) log sigmoid(h) - eps log sigmoid(-h)."""
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    h = beta * (chosen - rejected)
    loss = (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


def load_groups(path, tok, block_size):
    """(1) One group per comparison with at least one pair: (its distinct answers' token sequences, their lengths,
    [(w, l)] indices of every distinct untied pair, w ranked better). An answer's length counts its tokens and its
    <|end|> (3), so its tokens are the last `length` of its sequence."""
    groups = []
    hint = "collect comparisons with data/assistant/label.py"
    for r in read_jsonl(path, lambda r: check_comparison(r, tok), hint=hint):
        finished = r.get("finished", [True] * len(r["responses"]))
        answers = r.get("response_ids") or [tok.encode(y) for y in r["responses"]]  # (1) the sampled tokens
        prompt = tok.render_prompt(r["messages"])
        seqs = [(prompt + a + ([tok.end_id] if f else []))[-block_size:] for a, f in zip(answers, finished)]
        lens = [min(len(a) + int(f), len(s)) for a, f, s in zip(answers, finished, seqs)]
        index = {}  # a distinct answer -> its place among the group's sequences
        for s, n in zip(seqs, lens):
            index.setdefault(tuple(s), (len(index), n))
        pairs = sorted({(index[tuple(seqs[w])][0], index[tuple(seqs[l])][0]) for w in range(len(seqs))
                        for l in range(len(seqs)) if r["ranks"][w] < r["ranks"][l] and seqs[w] != seqs[l]})
        if pairs:
            groups.append(([list(s) for s in index], [n for _, n in index.values()], pairs))
    return groups


def load_pairs(path, tok, block_size):
    """(1) [(chosen ids, rejected ids, chosen answer length, rejected answer length)] of every group's pairs."""
    return [(seqs[w], seqs[l], lens[w], lens[l]) for seqs, lens, pairs in load_groups(path, tok, block_size)
            for w, l in pairs]


def sequence_logps(model, seqs, lens, pad_id, rt):
    """(3) Sum of log p(token | before) over the last lens[i] tokens of each sequence: (B,)."""
    idx, mask = pad_right(seqs, pad_id, rt.device)                          # (B, T)
    starts = torch.tensor([len(s) - n for s, n in zip(seqs, lens)], device=rt.device)  # first answer token
    return answer_logps(model, idx, mask, starts, rt)


@torch.no_grad()
def reference_logps(model, pairs, pad_id, rt, batch_size=64):
    """(4) The frozen reference's log-probs of every pair's chosen and rejected answer: two (N,) tensors."""
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        chosen.append(sequence_logps(model, [p[0] for p in chunk], [p[2] for p in chunk], pad_id, rt))
        rejected.append(sequence_logps(model, [p[1] for p in chunk], [p[3] for p in chunk], pad_id, rt))
    empty = torch.zeros(0, device=rt.device)  # no pairs (a validation split whose answers all tied): (0,)
    return torch.cat(chosen) if pairs else empty, torch.cat(rejected) if pairs else empty


@torch.no_grad()
def group_reference_logps(model, groups, pad_id, rt, batch_size=64):
    """(4) The frozen reference's log-probs of every group's distinct answers: a list of (K_i,) tensors."""
    model.eval()
    seqs, lens = [s for g in groups for s in g[0]], [n for g in groups for n in g[1]]
    flat = [sequence_logps(model, seqs[i:i + batch_size], lens[i:i + batch_size], pad_id, rt)
            for i in range(0, len(seqs), batch_size)]
    return list(torch.cat(flat).split([len(g[0]) for g in groups])) if groups else []


def group_loss(model, groups, refs, pad_id, rt, beta, label_smoothing):
    """(1) (2) A batch of comparisons: each one's distinct answers in one forward pass, the DPO loss averaged over its
    pairs, then over the comparisons (InstructGPT's grouping: every comparison weighs the same). Returns (loss,
    chosen rewards, rejected rewards), the rewards (all pairs of the batch,)."""
    logps = sequence_logps(model, [s for g in groups for s in g[0]], [n for g in groups for n in g[1]], pad_id, rt)
    losses, chosen, rejected = [], [], []
    for (_, _, pairs), lp, ref in zip(groups, logps.split([len(g[0]) for g in groups]), refs):
        w, l = torch.tensor(pairs, device=lp.device).T                         # (pairs,) each
        loss, c, r = dpo_loss(lp[w], lp[l], ref[w], ref[l], beta, label_smoothing)
        losses.append(loss), chosen.append(c), rejected.append(r)
    return torch.stack(losses).mean(), torch.cat(chosen), torch.cat(rejected)


def pair_logps(model, pairs, pad_id, rt):
    """Chosen and rejected log-probs of a batch of pairs from one forward pass over both: two (B,) tensors."""
    seqs = [p[0] for p in pairs] + [p[1] for p in pairs]
    lens = [p[2] for p in pairs] + [p[3] for p in pairs]
    logps = sequence_logps(model, seqs, lens, pad_id, rt)
    return logps[:len(pairs)], logps[len(pairs):]


@torch.no_grad()
def preference_accuracy(model, pairs, ref, pad_id, rt, beta, batch_size=64):
    """(6) How often the implicit reward ranks the chosen answer above the rejected one (a tie counts half), and
    the mean margin."""
    model.eval()
    right, margin = 0.0, 0.0
    for i in range(0, len(pairs), batch_size):
        pc, pr = pair_logps(model, pairs[i:i + batch_size], pad_id, rt)
        _, rc, rr = dpo_loss(pc, pr, ref[0][i:i + batch_size], ref[1][i:i + batch_size], beta)
        right += ((rc > rr).float() + 0.5 * (rc == rr).float()).sum().item()
        margin += (rc - rr).sum().item()
    return right / max(len(pairs), 1), margin / max(len(pairs), 1)


if __name__ == "__main__":
    cfg = parse_config(Config)
    if not 0 <= cfg.label_smoothing < 0.5:
        raise SystemExit(f"--label_smoothing={cfg.label_smoothing}: expected the chance that a label is flipped, in "
                         f"[0, 0.5)")
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    source = cfg.out_dir if cfg.resume else cfg.init_from
    ckpt = load_checkpoint(source, stages=("dpo",) if cfg.resume else LM_STAGES,
                           hint="DPO starts from the SFT model: run sft.py")
    sft = load_checkpoint(ckpt["parent"], stages=LM_STAGES) if cfg.resume else ckpt
    tok = get_tokenizer(ckpt["tokenizer"])
    block = ckpt["model_args"]["block_size"]
    train = load_groups(os.path.join(cfg.data_dir, "prefs_train.jsonl"), tok, block)
    val = load_pairs(os.path.join(cfg.data_dir, "prefs_val.jsonl"), tok, block)

    policy = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device)        # (5)
    ref = model_from_checkpoint(sft, dropout=0.0).to(rt.device).eval().requires_grad_(False)  # (4)
    ref_train = group_reference_logps(ref, train, tok.pad_id, rt)
    ref_val = reference_logps(ref, val, tok.pad_id, rt)
    optimizer = configure_optimizer(policy, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    rt.device_type)
    per_step = cfg.batch_size * rt.world_size
    steps_per_epoch = len(train) // per_step
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train)} comparisons with preference pairs are fewer than one global batch of "
                         f"{per_step}")
    max_iters = cfg.epochs * steps_per_epoch
    step = 0
    if cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # fp16's loss scale, so that a resumed run goes on exactly
            rt.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], rt)
        step = ckpt["step"]
    parent = ckpt["parent"] if cfg.resume else source_of(cfg.init_from)
    model = wrap(policy, rt, cfg.compile)
    if rt.master:
        print(f"config: {json.dumps(asdict(cfg))}")
        print(f"data: {sum(len(g[2]) for g in train)} train preference pairs in {len(train)} comparisons / {len(val)} "
              f"val pairs, {max_iters} steps of {per_step} comparisons")
    logger = Logger(cfg.out_dir, max_iters, rt.master, step if cfg.resume else None)
    if step == 0:
        acc0, margin0 = preference_accuracy(policy, val, ref_val, tok.pad_id, rt, cfg.beta)
        logger.log(0, val_accuracy=acc0, val_margin=margin0)

    def checkpoint(**extra):
        rng = rng_state(rt)
        if rt.master:
            save_checkpoint(cfg.out_dir, {
                "model": unwrap(model).state_dict(), "model_args": asdict(policy.config), "tokenizer": tok.name,
                "stage": "dpo", "parent": parent, "config": asdict(cfg), "step": step,
                "optimizer": optimizer.state_dict(), "scaler": rt.scaler.state_dict(), "rng": rng, **extra})

    t0, step0 = time.time(), step
    policy.train()  # dropout is 0 (5); train mode changes nothing else in a GPT
    while step < max_iters:
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch))  # (7)
        ids = order[i * per_step:(i + 1) * per_step][rt.rank * cfg.batch_size:(rt.rank + 1) * cfg.batch_size]
        lr = get_lr(step, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, rc, rr = group_loss(model, [train[j] for j in ids.tolist()], [ref_train[j] for j in ids.tolist()],
                                  tok.pad_id, rt, cfg.beta, cfg.label_smoothing)  # (1) (2)
        rt.scaler.scale(loss).backward()  # DDP averages the per-rank means: the global batch's mean (equal shards)
        clip_and_step(model, optimizer, rt, cfg.grad_clip, loss.item(), step, cfg.out_dir)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.log_interval == 0 or step == max_iters:
            logger.log(step, loss=loss.item(), margin=(rc - rr).mean().item(), accuracy=(rc > rr).float().mean().item(),
                       chosen_reward=rc.mean().item(), rejected_reward=rr.mean().item(), lr=lr,
                       ms_per_step=(time.time() - t0) * 1000 / (step - step0))
        if step < max_iters and (step % cfg.ckpt_interval == 0 or step % steps_per_epoch == 0):
            checkpoint()  # (7) an interrupted run resumes from here
    acc, margin = preference_accuracy(policy, val, ref_val, tok.pad_id, rt, cfg.beta)  # (6)
    logger.log(step, val_accuracy=acc, val_margin=margin)
    checkpoint(val_accuracy=acc, val_margin=margin)
    if rt.master:
        print(f"dpo: held-out preference accuracy of the implicit reward {acc:.3f} (margin {margin:.3f}) on "
              f"{len(val)} pairs -> {cfg.out_dir}")
    cleanup(rt)
