"""
PPO with a KL penalty: InstructGPT's third stage. The SFT policy answers prompts, the frozen reward model (RM) scores
them, and PPO moves the policy toward higher scores while a per-token KL penalty keeps it near the SFT model. RLOO and
GRPO replace the value model with the other answers to the same prompt (15-19); a verifier can join the RM (21).

    python ppo.py                                   # out/sft + out/reward -> out/ppo (~2 minutes on 2 CPU cores)
    python ppo.py --estimator=rloo --out_dir=out/rloo    # RLOO: 16 prompts x 4 answers an iteration, no value model
    python ppo.py --estimator=grpo --out_dir=out/grpo    # GRPO: group-normalised scores, the KL as a k3 loss term
    python ppo.py --beta=0 --out_dir=out/ppo_beta0  # no KL penalty: the RM score climbs, the gold score does not
    python ppo.py --target_kl=1                     # adaptive beta toward a KL target (Ziegler et al. 2019)
    python ppo.py --ptx_coef=0.1 --out_dir=out/ppo_ptx   # PPO-ptx: mix in the pretraining loss
    python ppo.py --estimator=grpo --reward=data/assistant/verifier.py --out_dir=out/grpo_verifier   # RLVR (21)
    python ppo.py --reward=out/reward,data/assistant/verifier.py --out_dir=out/ppo_rm_verifier  # RM + verifier (21)
    python ppo.py --vf_warmup=0                     # no value warmup: the policy moves against the RM-as-critic (20)
    python ppo.py --resume                          # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 ppo.py # DDP: each rank rolls out its own prompts
    from ppo import compute_gae, masked_whiten, policy_loss, value_loss, rloo_advantages, grpo_advantages, kl_k3

Details, numbered where the code implements them; evidence: docs/experiments.md; details at length: docs/reference.md.
Sources: InstructGPT (Ouyang et al. 2022), Ziegler et al. 2019, PPO and GAE (Schulman et al. 2017, 2016), N+ (Huang et
al. 2024, "The N+ implementation details of RLHF with PPO"), RLOO (Ahmadian et al. 2024), GRPO (Shao et al. 2024).
 1. Four models: policy and frozen reference (the SFT model), the frozen RM, and a value model that starts as the RM,
    trunk and head as reward.py saved them, read at every position (InstructGPT C.4; N+). Dropout off in all (N+).
 2. Rollouts: prompts_rl.jsonl, left-padded, sampled at temperature T, no top-k / top-p (so (3) is the sampler's; N+).
 3. Log-probs: one forward pass per model (policy, reference) over prompt + answer, logits / T (N+), to its <|end|>.
 4. Score: the RM at the answer's last real token, normalised by reward.py (4): scaled so that the SFT policy's fresh
    answers to RL prompts have std 1, shifted so that the demonstrations score 0 on average; minus missing_eos_penalty
    for an answer cut by the length limit without <|end|> (N+'s "EOS trick").
 5. Reward of answer token t: -beta * (log pi(y_t) - log pi_ref(y_t)) (the KL penalty, on every answer token), plus
    the score (4) on the last (Ziegler et al.; InstructGPT eq. 2): the KL is in the reward, per token; KL per answer
    logged as k1 and k3.
 6. beta fixed (14), or with --target_kl Ziegler et al.'s controller: beta *= 1 + clip(KL / target - 1, -0.2, 0.2) /
    kl_horizon each iteration. Deviation: a horizon in iterations, not answers (theirs would not move beta here).
 7. GAE (gamma 1) on V(x, y_<t) before each answer token, V = 0 after the last. Deviation: lambda 1, not N+'s 0.95:
    the critic starts as the RM, and even warmed up (20) it reads answer prefixes noisily: lambda < 1 adds that noise.
 8. Advantages whitened with the mean and variance of the real tokens only (N+): pads would drag both.
 9. ppo_epochs passes (4; rloo 1) in shuffled minibatches; the first one's ratio is 1 up to rounding (ratio_first; N+).
10. Clipped surrogate (clip 0.2; PPO eq. 7), averaged over the minibatch's real tokens.
11. Clipped value loss (clip 0.2; N+) times vf_coef; one AdamW and one gradient-norm clip for policy and value.
12. PPO-ptx (InstructGPT eq. 2): + ptx_coef * next-token loss on train.bin windows; 0 by default, run.sh's ppo_ptx
    0.1. Deviation from their 27.8: SFT forgot most of the corpus, so the pretraining gradient is large and pulls far.
13. DDP: each rank rolls out its own prompts with its own seed, whitens its own advantages; logs averaged over ranks.
14. Deviation: beta = 0.1, not InstructGPT's 0.02: this RM has blind spots (it cannot check a held-out fact, a sum
    or a reversal), and a weaker penalty lets the policy drift far enough to exploit them (--beta=0 shows it).
15. One switch, not a second script: the estimators differ only in advantages and one loss term. rloo / grpo sample
    k >= 2 answers per prompt (adjacent rows), no value model; stage "ppo"; --resume refuses another estimator's.
16. RLOO: an answer's reward is (5) summed, score - beta * sum_t kl_t, its advantage that minus the other k - 1
    answers' mean; loss -(1/B) sum_i A_i log pi(y_i), REINFORCE: no ratio, no clip, one pass (on-policy).
17. GRPO (eq. 3): advantage (score - group mean) / (group std + 1e-4) on every token, 0 for a tied group; beta * k3
    to the reference per token (eq. 4) is a loss term, not in the reward, averaged like the surrogate (18).
18. Deviation: GRPO averages each answer's tokens, then the answers; here PPO's token mean (10), since the per-answer
    mean favours short answers (Dr. GRPO). --group_std=false: Dr. GRPO's advantage, no division by the std.
19. rloo / grpo defaults: k = 4 (Ahmadian et al.: 2 and 4); beta 0.1 as PPO's (14), so that the estimators differ
    and not the objectives; PPO's lr. "tied" logs the share of groups whose k rewards are equal (no gradient).
20. Value warmup (Yuan et al. 2025, VC-PPO): for vf_warmup iterations the policy stands still and the value model
    alone fits the returns of SFT's answers, unclipped, at vf_warmup_lr (no checkpoint, beta fixed). Why: the RM's
    score of a bare prompt is not its answers' return (on harmful requests, far below its refusals'): every answer's
    first token gets a positive advantage, and PPO's clip lets the common one grow faster than a rarer, preferred one.
21. RLVR (Tülu 3): --reward is an RM, a verifier .py (verify(record, response) -> float or None), or both (their sum,
    the verifier's times verifier_coef). A verifier alone: the prompts it checks; value model SFT's trunk, zero head.
"""

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import (LM_STAGES, Logger, check_messages, cleanup, clip_and_step, configure_optimizer, get_lr,
                    load_checkpoint, load_labeler, load_module, model_from_checkpoint, parse_config, read_jsonl,
                    save_checkpoint, setup, source_of, unwrap, wrap)
from model import GPT, GPTConfig
from reward import load_reward_model
from tokenizer import get_tokenizer


@dataclass
class Config:
    data_dir: str = "data/assistant"   # prompts_rl.jsonl (and train.bin for --ptx_coef)
    init_from: str = "out/sft"         # policy and reference (1)
    reward: str = "out/reward"         # an RM checkpoint (the value model starts from it: 1), a verifier, or both (21)
    verifier_coef: float = 1.0         # (21) weight of the verifier's reward added to the score
    labeler: str = "data/assistant/labeler.py"  # only to log the batch's gold score; never in the loss ("" = none)
    out_dir: str = "out/ppo"           # checkpoint and log.jsonl go here
    resume: bool = False               # continue from out_dir/ckpt.pt
    estimator: str = "gae"             # advantages: gae (PPO, with a value model; 7), rloo (16) or grpo (17)
    k: int = 4                         # rloo, grpo: answers sampled per prompt, >= 2 (15, 19); gae samples one
    group_std: bool = True             # grpo: divide by the group's score std (17); false: Dr. GRPO's advantage (18)
    max_iters: int = 12                # rollout batches (iterations) of the policy, after the warmup (20)
    batch_size: int = 128              # answers per rollout batch per process: one per prompt (gae), or k (15)
    minibatch_size: int = 32           # answers per PPO update (9): 4 updates a pass, the gradient of more answers
    ppo_epochs: int = 0                # passes over each rollout batch (9); 0: 4 (gae, grpo), 1 (rloo: 16)
    max_new_tokens: int = 64           # response length limit (2)
    temperature: float = 1.0           # sampling temperature; log-probs use logits / temperature (2, 3)
    beta: float = 0.1                  # KL coefficient: in the reward (5, 16), of the grpo loss term (17); (6, 14, 19)
    target_kl: float = 0.0             # > 0: adapt beta toward this KL per answer, in nats (6)
    kl_horizon: float = 2.0            # the controller's horizon in iterations: beta moves <= 0.2 / horizon a step (6)
    missing_eos_penalty: float = 1.0   # subtracted from the score of an answer cut by the length limit (4)
    gamma: float = 1.0                 # GAE discount (7)
    lam: float = 1.0                   # GAE lambda (7): 1 = Monte-Carlo returns minus the value baseline
    clip: float = 0.2                  # policy ratio clip (10)
    vf_clip: float = 0.2               # value clip (11)
    vf_coef: float = 0.1               # value loss coefficient (11)
    ptx_coef: float = 0.0              # PPO-ptx pretraining-loss coefficient (12); run.sh's ppo_ptx: 0.1
    ptx_batch_size: int = 8            # pretraining windows per update when ptx_coef > 0 (12)
    vf_warmup: int = 4                 # iterations fitting the value model alone before the policy's first (20)
    vf_warmup_lr: float = 3e-4         # the value model's learning rate in those iterations (20)
    learning_rate: float = 3e-5        # peak learning rate (policy and value)
    min_lr: float = 3e-6               # learning rate at the end of the cosine decay
    warmup_iters: int = 0              # linear warmup, in iterations (the learning rate is set once an iteration)
    weight_decay: float = 0.0          # on matrices only; 0 as in most RLHF code (the KL term already regularises)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0             # clip the global gradient norm of policy + value; 0 disables (11)
    log_interval: int = 1              # iterations between log lines
    sample_interval: int = 10          # iterations between two printed sample answers
    ckpt_interval: int = 4             # iterations between checkpoints (and policy snapshots iter_N.pt)
    seed: int = 1337
    device: str = "auto"               # auto (cuda if available), cpu, cuda, mps
    dtype: str = "auto"                # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)
    compile: bool = False              # torch.compile policy and value for the updates (GPUs)


# ----------------------------------------------------------------------------------------------------------------------
# the math, as pure functions on (B, T) tensors with a (B, T) mask of real tokens


def ptx_seed(seed, it, rank, j):
    """(12) The seed of PPO-ptx's corpus windows for minibatch j of iteration it on one rank: distinct for every
    (it, rank, j) with it < 2**20, rank < 2**16 and j < 2**16, so no two ranks or steps draw the same windows (a sum
    such as seed + 7 j + 100003 it + rank repeats for 8 ranks or more)."""
    return ((seed * 2**20 + it) * 2**16 + rank) * 2**16 + j


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask):
    """(8) (x - mean) / std over the real tokens only (mask 1); 0 at the pads."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def compute_gae(rewards, values, mask, gamma=1.0, lam=1.0):
    """(7) Generalised advantage estimation over each row's real tokens.

    rewards, values, mask: (B, T); mask 1 on a row's response tokens, which come first in the row. A value past the
    last real token counts 0 (the episode is over). Returns (advantages, returns), both (B, T), 0 at the pads.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])                           # (B,)
    for t in reversed(range(rewards.size(1))):
        next_value = values[:, t + 1] if t + 1 < rewards.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]        # TD error
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def reinforce_loss(logprobs, old_logprobs, advantages, mask, clip=0.2):
    """(16) RLOO's loss as Ahmadian et al. write it: REINFORCE, -(1 / B) sum_i A_i log pi(y_i | x_i), log pi(y_i | x_i)
    the sum over answer i's real tokens; no ratio, no clip. logprobs, old_logprobs, mask (B, n); advantages (B,).
    Returns (loss, clip fraction, approx KL), the last two policy_loss's own on the same tokens: where PPO's clip
    would have cut (nothing is clipped here), logged to show how far a minibatch after the first is from the
    policy that sampled it."""
    loss = -(advantages * (logprobs * mask).sum(1)).mean()
    _, clipfrac, approx_kl = policy_loss(logprobs.detach(), old_logprobs, advantages[:, None].detach(), mask, clip)
    return loss, clipfrac, approx_kl


def policy_loss(logprobs, old_logprobs, advantages, mask, clip=0.2):
    """(10) PPO's clipped surrogate. Returns (loss, clip fraction, approx KL), averaged over the real tokens;
    approx KL is the mean of (log ratio)^2 / 2, the estimator N+ logs."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean(0.5 * log_ratio ** 2, mask)
    return loss, clipfrac.detach(), approx_kl.detach()


def value_loss(values, old_values, returns, mask, clip=0.2):
    """(11) The clipped value loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped within clip of the old V."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def adapt_beta(beta, kl, target, horizon):
    """(6) Ziegler et al.'s proportional controller, one step: the KL per answer of this iteration against the target
    moves beta by e / horizon, e = clip(kl / target - 1, -0.2, 0.2), horizon in iterations."""
    error = max(-0.2, min(0.2, kl / target - 1.0))
    return beta * (1.0 + error / horizon)


def response_mask(response, end_id):
    """(3) (B, n) generated tokens -> (B, n) long mask: 1 up to and including the first <|end|>, 0 after it."""
    is_end = (response == end_id).long()
    return ((is_end.cumsum(1) - is_end) == 0).long()


def token_rewards(kl, score, mask, finished, beta, missing_eos_penalty):
    """(5) Per-token rewards (B, n): -beta * kl (B, n) on the real tokens, plus on each row's last real token the
    RM score (B,), less missing_eos_penalty where the answer did not finish (finished (B,) bool) (4)."""
    score = score - missing_eos_penalty * (~finished).float()
    rewards = -beta * kl * mask
    last = mask.long().sum(1) - 1                                        # (B,) index of the last real token
    rewards[torch.arange(mask.size(0), device=mask.device), last] += score
    return rewards


def rloo_advantages(rewards, k):
    """(16) RLOO: rewards (B,) of B / k prompts' answers, each prompt's k answers in adjacent rows -> advantages (B,),
    each answer's reward minus the mean of the other k - 1 answers' to the same prompt."""
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 answers per prompt (k = {k}): the baseline is the mean of the others")
    r = rewards.view(-1, k)                                              # (B / k, k)
    others = (r.sum(1, keepdim=True) - r) / (k - 1)                      # (B / k, k) leave-one-out means
    return (r - others).view(-1)


def grpo_advantages(scores, k, scale=True, eps=1e-4):
    """(17) GRPO: scores (B,), k answers per prompt in adjacent rows -> advantages (B,): (score - group mean) divided
    (scale) by the group's population std + eps, so a group of equal scores gets 0. scale=False: Dr. GRPO (18)."""
    s = scores.view(-1, k)                                               # (B / k, k)
    adv = s - s.mean(1, keepdim=True)
    if scale:
        adv = adv / (s.std(1, unbiased=False, keepdim=True) + eps)
    return adv.view(-1)


def kl_k3(logp, ref_logp):
    """(5) (17) Schulman's k3 estimate of KL(pi || pi_ref) per token, r - 1 - log r with r = pi_ref / pi: never
    negative, and 0 with a 0 gradient where pi = pi_ref. logp, ref_logp (B, T), pads masked to equal values."""
    log_r = ref_logp - logp
    return torch.exp(log_r) - 1 - log_r


# ----------------------------------------------------------------------------------------------------------------------
# models and forward passes


class ValueModel(nn.Module):
    """(1) The RM's trunk and head read at every position: forward(idx, attention_mask) -> values (B, T)."""

    def __init__(self, config):
        super().__init__()
        self.gpt = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)  # replaced by the RM's head (or zeros, 21) before training

    def forward(self, idx, attention_mask):
        return self.head(self.gpt.hidden_states(idx, attention_mask)).squeeze(-1)


def response_logprobs(model, idx, mask, P, temperature):
    """(3) Log-probs (B, n) of the response tokens idx[:, P:] under logits / temperature, and the log-softmax
    (B, n, V) they come from. model is a GPT (or its DDP wrapper); idx, mask (B, P + n)."""
    logits, _ = model(idx, attention_mask=mask)                        # (B, P + n, V)
    logp_all = F.log_softmax(logits[:, P - 1:-1].float() / temperature, dim=-1)  # predicts tokens P .. P+n-1
    return logp_all.gather(-1, idx[:, P:].unsqueeze(-1)).squeeze(-1), logp_all


@torch.no_grad()
def score_rollout(policy, ref, value, rm, seq, mask, P, temperature, chunk, rt):
    """Policy and reference log-probs, entropy, values (all (B, n)) and RM scores (B,) of a rollout batch,
    chunk answers at a time. value None (rloo, grpo: 15): no values."""
    out = {k: [] for k in ("logp", "ref_logp", "entropy", "score") + (("values",) if value is not None else ())}
    n = seq.size(1) - P
    for i in range(0, seq.size(0), chunk):
        lo, hi = used_columns(mask[i:i + chunk])
        x, m, p = seq[i:i + chunk, lo:hi], mask[i:i + chunk, lo:hi], P - lo
        pad = (0, n - (hi - P))  # the answers' columns the chunk did not need come back as 0 (masked everywhere)
        with rt.autocast:
            logp, logp_all = response_logprobs(policy, x, m, p, temperature)
            out["logp"].append(F.pad(logp, pad))
            out["entropy"].append(F.pad(-(logp_all.exp() * logp_all).sum(-1), pad))
            out["ref_logp"].append(F.pad(response_logprobs(ref, x, m, p, temperature)[0], pad))
            if value is not None:
                out["values"].append(F.pad(value(x, m)[:, p - 1:-1].float(), pad))
            out["score"].append(rm(x, m).float() if rm is not None             # (4) at the last real token
                                else torch.zeros(x.size(0), device=x.device))  # (21) a verifier alone
    return {k: torch.cat(v) for k, v in out.items()}


def used_columns(mask):
    """(9) (lo, hi): the columns of some rows of a batch, mask (B, P + n), that hold a real token of one of them. The
    others are pads in every row, and positions count from a row's first real token, so leaving them out changes
    no number; it only saves the work."""
    cols = mask.any(0).nonzero().squeeze(1)
    return int(cols[0]), int(cols[-1]) + 1


def check_prompt(record):
    check_messages(record, "user")


def load_rewards(spec):
    """(21) --reward: comma-separated RM checkpoints and verifier files -> (RM path or None, verify or None). One
    sentence naming what was expected where an item is neither."""
    rm_path, verify = None, None
    for item in [s for s in spec.split(",") if s]:
        if item.endswith(".py") and os.path.isfile(item):
            module = load_module(item, "verifier")  # by path, as the labeler
            if not callable(getattr(module, "verify", None)) or verify is not None:
                raise SystemExit(f"--reward={spec}: {item} defines no verify(record, response) function; expected an "
                                 f"RM checkpoint (reward.py's out_dir or its ckpt.pt) and/or one verifier file")
            verify = module.verify
        elif (os.path.isdir(item) or item.endswith(".pt")) and rm_path is None:
            rm_path = item
        else:
            raise SystemExit(f"--reward={spec}: {item!r} is neither a reward checkpoint (reward.py's out_dir or its "
                             f"ckpt.pt) nor a verifier (a .py file defining verify(record, response)); expected one "
                             f"of each at most")
    if rm_path is None and verify is None:
        raise SystemExit("--reward is empty: expected an RM checkpoint (out/reward) and/or a verifier file "
                         "(data/assistant/verifier.py)")
    return rm_path, verify


if __name__ == "__main__":
    cfg = parse_config(Config)
    if cfg.estimator not in ("gae", "rloo", "grpo"):
        raise SystemExit(f"--estimator={cfg.estimator} is not one of gae (PPO), rloo, grpo")
    gae = cfg.estimator == "gae"  # (15) only PPO has a value model
    k = 1 if gae else cfg.k       # answers per prompt
    if k < 2 and not gae:  # (15)
        raise SystemExit(f"--estimator={cfg.estimator} needs --k >= 2 answers per prompt: an answer's baseline is the "
                         f"other answers to its prompt, and with --k={cfg.k} there are none")
    if cfg.ppo_epochs < 0:
        raise SystemExit(f"--ppo_epochs={cfg.ppo_epochs}: expected a number of passes >= 1, or 0 for the estimator's")
    epochs = cfg.ppo_epochs or (1 if cfg.estimator == "rloo" else 4)  # (9) (16)
    if cfg.estimator == "rloo" and epochs > 1:  # (16)
        raise SystemExit(f"--estimator=rloo is REINFORCE, on-policy: one pass over each rollout batch, not "
                         f"--ppo_epochs={cfg.ppo_epochs} (a second pass would reuse answers a changed policy did not "
                         f"sample, with no ratio to correct for it); use --estimator=gae or grpo for several epochs")
    if cfg.batch_size % k:
        raise SystemExit(f"--batch_size={cfg.batch_size} answers do not split into groups of --k={k}: use a multiple "
                         f"of {k}")
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    source = cfg.out_dir if cfg.resume else cfg.init_from
    ckpt = load_checkpoint(source, stages=("ppo",) if cfg.resume else LM_STAGES,
                           hint="PPO starts from the SFT model: run sft.py")
    if cfg.resume and ckpt["config"].get("estimator", "gae") != cfg.estimator:  # (15)
        raise SystemExit(f"{source} holds a --estimator={ckpt['config'].get('estimator', 'gae')} run, not "
                         f"--estimator={cfg.estimator}: resume it with its estimator, or use another --out_dir")
    tok = get_tokenizer(ckpt["tokenizer"])
    rm_path, verify = load_rewards(cfg.reward)  # (21)
    rm = None
    if rm_path is not None:
        rm, rm_ckpt = load_reward_model(rm_path)
        if rm_ckpt["tokenizer"] != tok.name:
            raise SystemExit(f"the reward model uses the {rm_ckpt['tokenizer']!r} tokenizer, the policy {tok.name!r}")
    labeler = load_labeler(cfg.labeler)
    records = read_jsonl(os.path.join(cfg.data_dir, "prompts_rl.jsonl"), check_prompt,
                         hint="run python data/assistant/prepare.py")
    if rm is None:  # (21) a verifier alone learns only from the prompts it can check
        records = [r for r in records if verify(r, "") is not None]
        if not records:
            raise SystemExit(f"the verifier can check none of the prompts in {cfg.data_dir}/prompts_rl.jsonl: give an "
                             f"RM as well (--reward=out/reward,{cfg.reward})")
    block = ckpt["model_args"]["block_size"]
    limit = block - cfg.max_new_tokens
    if limit <= 0:
        raise SystemExit(f"--max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in a context of {block}")
    prompts = [tok.render_prompt(r["messages"]) for r in records]
    if sum(len(p) > limit for p in prompts):
        print(f"warning: {sum(len(p) > limit for p in prompts)} prompts are longer than {limit} tokens; keeping "
              f"their last {limit}", file=sys.stderr)
    prompts = [p[-limit:] for p in prompts]
    corpus = None
    if cfg.ptx_coef > 0:  # (12)
        corpus = np.memmap(os.path.join(cfg.data_dir, "train.bin"), dtype=np.uint16, mode="r")

    # (1) the four models (three without the value model: 15), dropout off in all of them
    policy = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device)
    sft = ckpt if not cfg.resume else load_checkpoint(ckpt["parent"], stages=LM_STAGES)
    ref = model_from_checkpoint(sft, dropout=0.0).to(rt.device).eval().requires_grad_(False)
    if rm is not None:
        rm.to(rt.device).requires_grad_(False)
    value = None
    if gae:
        value = ValueModel(rm.gpt.config if rm is not None else policy.config).to(rt.device)
        if cfg.resume:
            value.load_state_dict(ckpt["value"])
        elif rm is not None:
            value.load_state_dict(rm.state_dict())
        else:  # (21) no RM: the SFT policy's trunk, a head that says 0 until the warmup (20) fits it
            value.gpt.load_state_dict(policy.state_dict())
            nn.init.zeros_(value.head.weight)
            nn.init.zeros_(value.head.bias)
    both = nn.ModuleList([policy, value] if gae else [policy])  # one optimizer, one gradient clip (11)
    optimizer = configure_optimizer(both, cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    rt.device_type)
    warmup = cfg.vf_warmup if gae else 0  # (20) the critic-free estimators have no value model to warm up
    it, beta = -warmup, cfg.beta  # it counts the policy's iterations: the value model's warmup is -warmup .. -1
    if cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):  # fp16's loss scale, so that a resumed run goes on exactly
            rt.scaler.load_state_dict(ckpt["scaler"])
        it, beta = ckpt["step"], ckpt["beta"]
    parent = ckpt["parent"] if cfg.resume else source_of(cfg.init_from)
    policy_w, value_w = wrap(policy, rt, cfg.compile), wrap(value, rt, cfg.compile) if gae else None
    policy.eval()  # (1) eval mode throughout; no dropout anyway, but no surprises either
    if gae:
        value.eval()

    n_prompts = cfg.batch_size // k  # this rank's prompts an iteration, k answers each (15)
    per_iter = n_prompts * rt.world_size
    if rt.master:
        print(f"config: {json.dumps(asdict(cfg))}")
        print(f"models: policy and reference {policy.num_params() / 1e6:.2f}M from {cfg.init_from}, "
              f"{'reward and value' if gae else 'reward (no value model: ' + cfg.estimator + ')'} from {cfg.reward}"
              f"{'' if verify is None else f' (the verifier times {cfg.verifier_coef:g})'}; "
              f"{len(prompts)} prompts, {per_iter} per iteration{'' if gae else f' x {k} answers'}, "
              f"{cfg.max_iters} iterations" + (f" after {warmup} of the value model alone" if warmup else ""))
    logger = Logger(cfg.out_dir, cfg.max_iters, rt.master, it if cfg.resume else None)

    def checkpoint():
        if rt.master:
            policy_only = {"model": unwrap(policy_w).state_dict(), "model_args": asdict(policy.config),
                           "tokenizer": tok.name, "stage": "ppo", "parent": parent,
                           "reward": ",".join(map(os.path.abspath, filter(None, cfg.reward.split(",")))),
                           "config": asdict(cfg), "step": it, "beta": beta}
            save_checkpoint(os.path.join(cfg.out_dir, f"iter_{it}.pt"), policy_only)  # for evaluate.py --snapshots
            save_checkpoint(cfg.out_dir, {**policy_only, **({"value": unwrap(value_w).state_dict()} if gae else {}),
                                          "optimizer": optimizer.state_dict(), "scaler": rt.scaler.state_dict()})

    while it < cfg.max_iters:
        warm = it < 0  # (20) the policy stands still; the value model alone fits the returns of SFT's answers
        # ---- (2) rollout: this rank's prompts, left-padded, sampled at temperature T; a pure function of (seed, it)
        t0 = time.time()
        epoch, i = divmod(it * per_iter, len(prompts))  # warmup: it < 0, epoch -1's last prompts
        order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        order = order + torch.randperm(len(prompts), generator=torch.Generator().manual_seed(cfg.seed + epoch + 1)
                                       ).tolist()  # the batch may run past the end of this epoch's order
        ids = order[i + rt.rank * n_prompts:i + (rt.rank + 1) * n_prompts]
        ids = [j for j in ids for _ in range(k)]  # (15) a prompt's k answers in adjacent rows: a group
        batch = [prompts[j] for j in ids]
        P = max(len(p) for p in batch)
        x = torch.tensor([[tok.pad_id] * (P - len(p)) + p for p in batch], device=rt.device)   # (B, P)
        pmask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in batch], device=rt.device)
        gen = torch.Generator(device=rt.device).manual_seed(cfg.seed * 100003 + it * 1009 + rt.rank)  # (13)
        with rt.autocast:
            seq, _ = policy.generate(x, cfg.max_new_tokens, temperature=cfg.temperature, eos_id=tok.end_id,
                                     pad_id=tok.pad_id, attention_mask=pmask, generator=gen)  # (B, P + n)
        rmask = response_mask(seq[:, P:], tok.end_id)                       # (3) (B, n)
        mask = torch.cat([pmask, rmask], 1)                                  # (B, P + n)
        finished = (seq[:, P:] == tok.end_id).any(1)                         # (B,)
        t1 = time.time()

        # ---- scoring: log-probs, values, RM scores, per-token rewards, advantages
        r = score_rollout(policy, ref, value, rm, seq, mask, P, cfg.temperature, cfg.minibatch_size, rt)
        lengths = rmask.sum(1).float()
        texts = [tok.decode(row[:int(n) - int(f)]) for row, n, f in zip(seq[:, P:].tolist(), lengths, finished)]
        score, verified = r["score"], None                                   # (4) (B,)
        if verify is not None:  # (21) the verifier's reward, where it can check the answer
            checks = [verify(records[j], t) for j, t in zip(ids, texts)]
            score = score + cfg.verifier_coef * torch.tensor([c or 0.0 for c in checks], device=rt.device)
            verified = [c for c in checks if c is not None]
        fmask = rmask.float()
        kl = (r["logp"] - r["ref_logp"]) * fmask                             # (5) k1 per token
        if gae:
            rewards = token_rewards(kl, score, fmask, finished, beta, cfg.missing_eos_penalty)  # (4) (5)
            advantages, returns = compute_gae(rewards, r["values"], fmask, cfg.gamma, cfg.lam)  # (7)
            advantages = masked_whiten(advantages, fmask)                    # (8)
        else:  # (16) RLOO's reward: (5)'s summed over the answer; (17) GRPO's: the score alone, its KL is in the loss
            in_reward = beta if cfg.estimator == "rloo" else 0.0
            seq_rewards = token_rewards(kl, score, fmask, finished, in_reward, cfg.missing_eos_penalty).sum(1)
            seq_adv = (rloo_advantages(seq_rewards, k) if cfg.estimator == "rloo"            # (16) (B,)
                       else grpo_advantages(seq_rewards, k, cfg.group_std))                # (17) (B,)
            advantages = seq_adv[:, None] * fmask                            # (B, n): the answer's, on every token
            spread = seq_rewards.view(-1, k)                                 # (B / k, k)
            tied = (spread.max(1).values - spread.min(1).values <= 1e-6).float().mean()  # (19) groups without signal
        t2 = time.time()

        # ---- (9) PPO epochs over shuffled minibatches
        lr = cfg.vf_warmup_lr if warm else get_lr(it, cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        g = torch.Generator().manual_seed(cfg.seed + 31 * it)
        stats = {name: [] for name in ("pg_loss", "vf_loss", "kl_loss", "ptx_loss", "clipfrac", "approx_kl")}
        ratio_first = None
        for _ in range(epochs):
            perm = torch.randperm(seq.size(0), generator=g).to(rt.device)
            for s in range(0, seq.size(0), cfg.minibatch_size):
                mb = perm[s:s + cfg.minibatch_size]
                lo, hi = used_columns(mask[mb])  # the minibatch's rows, their columns that hold a token
                x, xm, p = seq[mb, lo:hi], mask[mb, lo:hi], P - lo

                def cut(t):  # (B, n) -> the minibatch's rows, answer columns up to the last one it uses
                    return t[mb, :hi - P]
                m = cut(fmask)
                with rt.autocast:
                    logp = None if warm else response_logprobs(policy_w, x, xm, p, cfg.temperature)[0]
                    v = value_w(x, xm)[:, p - 1:-1].float() if gae else None
                loss = 0.0
                if not warm and cfg.estimator == "rloo":  # (16) REINFORCE on the answer's summed log-prob
                    pg, clipfrac, approx_kl = reinforce_loss(logp, cut(r["logp"]), seq_adv[mb], m, cfg.clip)
                    loss = pg
                elif not warm:
                    pg, clipfrac, approx_kl = policy_loss(logp, cut(r["logp"]), cut(advantages), m, cfg.clip)  # (10)
                    loss = pg
                if gae:  # (11); unclipped in the warmup (20): the old values are the RM's guesses it has to leave
                    vf = value_loss(v, cut(r["values"]), cut(returns), m, math.inf if warm else cfg.vf_clip)
                    loss = loss + cfg.vf_coef * vf
                    stats["vf_loss"].append(vf.item())
                if cfg.estimator == "grpo":  # (17) beta * k3 to the reference, token-averaged as the surrogate (18)
                    kl_term = masked_mean(kl_k3(logp * m, cut(r["ref_logp"]) * m), m)
                    loss = pg + beta * kl_term
                    stats["kl_loss"].append(kl_term.item())
                if corpus is not None and not warm:  # (12) PPO-ptx: windows of the pretraining corpus
                    gp = torch.Generator().manual_seed(ptx_seed(cfg.seed, it, rt.rank, len(stats["pg_loss"])))
                    starts = torch.randint(len(corpus) - block - 1, (cfg.ptx_batch_size,), generator=gp).tolist()
                    w = torch.stack([torch.from_numpy(corpus[s0:s0 + block + 1].astype(np.int64)) for s0 in starts])
                    w = w.to(rt.device)
                    with rt.autocast:
                        _, ptx = policy_w(w[:, :-1], w[:, 1:])
                    loss = loss + cfg.ptx_coef * ptx
                    stats["ptx_loss"].append(ptx.item())
                if ratio_first is None and not warm:
                    ratio_first = masked_mean(torch.exp(logp - cut(r["logp"])), m).item()
                rt.scaler.scale(loss).backward()
                clip_and_step(both, optimizer, rt, cfg.grad_clip, loss.item(), it, cfg.out_dir)
                optimizer.zero_grad(set_to_none=True)
                if not warm:  # after the PPO-ptx windows, whose seed counts the minibatches so far (12)
                    for name, val in (("pg_loss", pg), ("clipfrac", clipfrac), ("approx_kl", approx_kl)):
                        stats[name].append(val.item())
        t3 = time.time()

        # ---- statistics of this iteration, averaged over ranks (13)
        avg = {name: sum(v) / len(v) for name, v in stats.items() if v}  # over the iteration's minibatches
        critic = {}
        if gae:  # (11) the value model's loss and the share of the returns' variance it explains
            v_err = masked_mean((returns - r["values"] - masked_mean(returns - r["values"], fmask)) ** 2, fmask)
            v_var = masked_mean((returns - masked_mean(returns, fmask)) ** 2, fmask)
            critic = {"vf_loss": avg["vf_loss"], "explained_var": 1.0 - (v_err / v_var.clamp(min=1e-8)).item()}
        gold = [labeler.score(records[j], t) for j, t in zip(ids, texts)] if labeler else None
        metrics = {
            "rm_score": r["score"].mean().item(),
            **({"gold": sum(gold) / len(gold)} if gold else {}),                  # a metric, never a reward
            **({"verified": sum(verified) / len(verified)} if verified else {}),  # (21)
            "kl": kl.sum(1).mean().item(),                                         # (5) k1, nats per answer
            "kl_k3": (kl_k3(r["logp"] * fmask, r["ref_logp"] * fmask) * fmask).sum(1).mean().item(),  # (5) k3
            "entropy": masked_mean(r["entropy"], fmask).item(),
            **({} if warm else {"clipfrac": avg["clipfrac"], "approx_kl": avg["approx_kl"], "pg_loss": avg["pg_loss"]}),
            **critic,
            **({"kl_loss": avg["kl_loss"]} if "kl_loss" in avg else {}),       # (17) k3 per token, before beta
            **({"tied": tied.item()} if not gae else {}),                        # (19)
            "resp_len": lengths.mean().item(),
            "finished": finished.float().mean().item(),
            **({} if warm else {"ratio_first": ratio_first}),
            **({"ptx_loss": avg["ptx_loss"]} if "ptx_loss" in avg else {}),
            "beta": beta, "lr": lr,
            "t_rollout": t1 - t0, "t_score": t2 - t1, "t_update": t3 - t2,
        }
        if rt.ddp:
            keys = [name for name in metrics if name not in ("beta", "lr")]
            t = torch.tensor([metrics[name] for name in keys], device=rt.device, dtype=torch.float64)
            dist.all_reduce(t)
            metrics.update({name: v / rt.world_size for name, v in zip(keys, t.tolist())})
        if cfg.target_kl > 0 and not warm:  # (6) one beta on every rank: metrics["kl"] is averaged over them (13)
            beta = adapt_beta(beta, metrics["kl"], cfg.target_kl, cfg.kl_horizon)
        it += 1
        if it % cfg.log_interval == 0 or it == cfg.max_iters:
            logger.log(it, **metrics)
        if rt.master and (it % cfg.sample_interval == 0 or it == 1):
            for j, t in list(zip(ids, texts))[:2]:
                print(f"  [{records[j]['messages'][-1]['content']!r}] -> {t!r}", flush=True)
        if it > 0 and (it % cfg.ckpt_interval == 0 or it == cfg.max_iters):  # none in the warmup (20)
            checkpoint()
    if rt.master:
        print(f"ppo: {cfg.max_iters} iterations -> {cfg.out_dir}")
    cleanup(rt)
