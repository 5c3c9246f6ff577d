"""
PPO with a KL penalty: InstructGPT's third stage. The SFT policy answers prompts, the frozen reward model scores the
answers, and PPO moves the policy toward higher scores while a per-token KL penalty keeps it near the SFT model.
On the same rollouts, two critic-free estimators replace PPO's value model with the other answers to the same prompt:
RLOO and GRPO (15-19).

    python ppo.py                                   # out/sft + out/reward -> out/ppo (~3 minutes on 2 CPU cores)
    python ppo.py --estimator=rloo --out_dir=out/rloo    # RLOO: 16 prompts x 4 answers an iteration, no value model
    python ppo.py --estimator=grpo --out_dir=out/grpo    # GRPO: group-normalised scores, the KL as a k3 loss term
    python ppo.py --beta=0 --out_dir=out/ppo_beta0  # no KL penalty: the RM score climbs, the gold score does not
    python ppo.py --target_kl=1                     # adaptive beta toward a KL target (Ziegler et al. 2019)
    python ppo.py --ptx_coef=0.1 --out_dir=out/ppo_ptx   # PPO-ptx: mix in the pretraining loss
    python ppo.py --estimator=grpo --reward=data/assistant/verifier.py --out_dir=out/grpo_verifier   # RLVR (21)
    python ppo.py --reward=out/reward,data/assistant/verifier.py --out_dir=out/ppo_rm_verifier  # RM + verifier (21)
    python ppo.py --vf_warmup=0                     # no value warmup: the critic starts as the RM (20)
    python ppo.py --resume                          # continue an interrupted run
    torchrun --standalone --nproc_per_node=2 ppo.py # DDP: each rank rolls out its own prompts

    from ppo import compute_gae, masked_whiten, policy_loss, value_loss   # pure functions on (B, T) tensors
    from ppo import rloo_advantages, grpo_advantages, kl_k3                # ... and on (B,) groups of k answers

Details implemented here, numbered where the code implements them. Sources: InstructGPT (Ouyang et al. 2022, eq. 2
and appendix C.4), Ziegler et al. 2019 ("Fine-tuning language models from human preferences"), PPO (Schulman et al.
2017), GAE (Schulman et al. 2016), and "The N+ implementation details of RLHF with PPO" (Huang et al. 2024, "N+").
 1. Four models: the policy and a frozen reference, both the SFT model; the frozen RM; a value model initialised
    from the RM (InstructGPT C.4; N+). Dropout is off in all four, in rollouts and in updates: with dropout the
    recomputed log-probs are noise and the ratio of the first minibatch is not 1 (N+).
 2. Rollouts: a batch of prompts from prompts_rl.jsonl, left-padded (position ids count from each row's first real
    token, model.py), sampled by the KV-cache generator at temperature T with no top-k / top-p: the samples must
    come from the distribution whose log-probs PPO uses (N+). Up to max_new_tokens, stopping at <|end|>.
 3. Log-probs of the policy and the reference are recomputed by one forward pass over prompt + response with the
    logits divided by T (N+), on exactly the generated tokens. The response mask keeps the tokens up to and
    including the first <|end|>; pads after it are masked everywhere below.
 4. Score: the RM at the last real token (the <|end|>, or the last token of a cut answer), already normalised by
    reward.py (std 1 on the SFT policy's fresh answers to RL prompts, as lm-human-preferences and N+; demonstrations'
    mean 0, as InstructGPT); minus missing_eos_penalty when the answer reached the length limit without <|end|>
    (N+: the "EOS trick").
 5. Per-token reward: -beta * (log pi(y_t) - log pi_ref(y_t)) on every response token, plus the score on the last
    one (Ziegler et al.; InstructGPT eq. 2). Logged: the KL per answer with the k1 estimator (sum of log-ratios)
    and the k3 one (sum of r - 1 - log r, r = pi_ref / pi, never negative; Schulman 2020 "Approximating KL").
 6. beta fixed (see 14), or with --target_kl the adaptive controller of Ziegler et al. 2019 (sec. 2.2; their
    lm-human-preferences code): after every iteration, e = clip(KL / target - 1, -0.2, 0.2) on the batch's mean KL
    per answer and beta <- beta * (1 + e * n / horizon). Deviation: n and the horizon count iterations (n = 1), not
    answers. Their horizon of 10000 answers was ~20 of their 512-answer batches and 1/100 of a 1M-answer run (beta
    moved up to 1% a batch); against this project's 64 answers an iteration and ~2000 a run it moves beta by at most
    0.13% an iteration, 4% a run: nothing. kl_horizon = 2 iterations: up to 10% an iteration, x2.6 in 10.
    Measured on world v2's first RM (not yet scaled to std 1), from beta 0.3 (32 iterations): the KL follows beta slowly
    (it is 0 until the policy has moved, which first drives beta down, and a policy that has drifted comes back only at
    the pace of its learning rate), so the KL overshoots before it is held. --target_kl=1: KL ~2 in iterations 7-19
    while beta rose 0.22 -> 0.91, then KL 0.65-1.44 (mean 0.94) over the last 10 with beta 1.1-1.5 (fixed beta 0.3: KL
    1.1-1.9 and rising). --target_kl=2: beta fell to 0.13 by iteration 11, the KL rose to 3-3.5, and beta 0.75 by
    iteration 32 had not brought it back (mean 3.1 over the last 10): a target far from where the start beta keeps the
    KL needs a start beta near the one that holds it, or more iterations.
 7. Values V(x, y_<t) from the value model at the state before each response token. GAE (gamma 1) over the real
    response tokens, with V = 0 after the last one; returns = advantages + values. Deviation: lambda 1 (Monte-Carlo
    returns: a token's advantage is the answer's whole reward-to-go minus its value), not the 0.95 of N+ and
    lm-human-preferences. The critic starts as the RM, whose scores of answer prefixes are noise (seed 1: "S" -0.92,
    "N" +0.62, the first bytes of "Sorry, ..." and "No. ..."), and with lambda 0.95 over ~25 tokens the first token's
    advantage is mostly those early temporal differences (the final score reaches it weighted 0.95^25 = 0.28): PPO
    kept curt refusals on two seeds of three although the RM prefers polite ones by >1 std. Measured on 3 seeds
    (docs/experiments.md): curt 1.00/1.00/0.03 -> 0.03/0.46/0.00, gold 0.642 -> 0.663 on average; the critic explains
    less of the return's variance (0.60 -> 0.50 on average), as Monte-Carlo targets are noisier. With lambda 1 the
    value at the prompt, V(x), is each answer's whole baseline: (20) fits it before the policy moves.
 8. Advantages whitened with the mean and variance of the real tokens only (N+): pads would drag both.
 9. ppo_epochs (4; rloo 1: 16) passes over the rollout batch in shuffled minibatches. Old log-probs and values
    are those of the rollout, so the first minibatch of a batch has ratio exactly 1 (logged as ratio_first; a
    check from N+).
10. Clipped surrogate (clip 0.2; PPO eq. 7), averaged over the minibatch's real tokens.
11. Clipped value loss (clip 0.2; N+, as OpenAI's lm-human-preferences), times vf_coef; policy and value share one
    AdamW and one global gradient-norm clip.
12. PPO-ptx (InstructGPT eq. 2, gamma = 27.8 there): ptx_coef * the next-token loss on windows of the pretraining
    corpus (train.bin) in every update. 0 by default (plain PPO); run.sh's ppo_ptx row uses 0.1. SFT has already
    forgotten most of the corpus here (its loss on it ~10x the pretrained model's), so the pretraining gradient is
    large and pulls away from the SFT reference: 1 and 4 took the KL past 6 nats within 5 iterations. Measured on 3
    seeds with 0.05, 0.1 and 0.2 (docs/experiments.md "PPO-ptx"): 0.1 is the smallest at which the held-out facts
    are not answered worse than SFT does on any seed, at 4.5x less corpus loss than plain PPO.
13. DDP: each rank rolls out different prompts with its own sampling seed; gradients are averaged by DDP; the logged
    statistics are averaged over ranks. Advantages are whitened per rank.
14. Deviation: beta = 0.1, not InstructGPT's 0.02. The RM has blind spots (it cannot check a held-out fact, a sum
    or a reversal); on world v1, with beta 0.02 (lr 3e-5) the policy reached KL 11 nats in 20 iterations and the
    gold score fell from 0.5 to 0.1. World v2's first runs used 0.3 on an RM whose scores had std 2-3 on SFT samples;
    the RM is now scaled to std 1 (4), and 0.1 is about the same penalty per unit of the RM's spread. See the README
    for the runs, and `--beta=0` for the over-optimisation the penalty exists to prevent.

Critic-free estimators (--estimator=rloo|grpo). Sources: RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting
REINFORCE style optimization for learning from human feedback in LLMs", after Kool et al. 2019), GRPO (Shao et al. 2024,
"DeepSeekMath", sec. 4.1-4.2), Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"), Tang & Munos 2025
("On a few pitfalls in KL divergence gradient estimation for RL").
15. One switch, not a second script: the three estimators share everything but how a scored rollout batch becomes
    advantages and one loss term, ~30 lines; a second script would copy the rollout, scoring and update loop (~150
    lines) or cut this flat loop into the framework functions CleanRL's style avoids. rloo and grpo sample k answers
    for each of batch_size / k prompts: the same answers an iteration as PPO, so costs compare; a group's answers sit
    in adjacent rows. They keep (2)-(4), (9), (10), (12), (13) and drop the value model: it is neither built, trained
    nor checkpointed (one model, its AdamW state and a forward pass in scoring and in every update fewer). k = 1 is
    refused: an answer's baseline is the other answers to its prompt. The checkpoint's stage stays "ppo" (the script
    that wrote it; its config names the estimator), so every reader of ppo checkpoints reads it; --resume refuses a
    checkpoint of another estimator.
16. RLOO (Ahmadian et al. sec. 2.3-3): an answer's reward is (5)'s per-token rewards summed, score - beta * sum_t kl_t
    (their eq. 3's sequence-level KL-shaped reward), and its advantage that reward minus the mean of the other k - 1
    answers' (= k / (k - 1) times its distance to the group mean): unbiased, the baseline does not depend on the
    answer; no whitening (the paper has none). The loss is theirs, plain REINFORCE: -(1 / B) sum_i A_i log pi(y_i),
    log pi(y_i) summed over the answer's tokens (the whole answer is one action), no ratio and no clip, and one pass
    over the rollout batch (REINFORCE is on-policy; --ppo_epochs > 1 is refused). The minibatches after the first are
    a few steps off the policy that sampled them: logged as clipfrac, the share of tokens PPO's clip would have cut
    (a strictly on-policy update would be one step a rollout batch; here 4, as the PPO loop's minibatches).
    TRL's RLOO trainer instead keeps PPO's epochs with one clipped ratio per answer. Paper: k = 2 and 4, beta 0.03
    (TL;DR) and 0.10 (HH), lr 1e-6. Here a rollout batch of 64 answers is 4 gradient steps, PPO's 16.
17. GRPO (Shao et al. eq. 3): the advantage of an answer is (score - group mean) / (group std + 1e-4), the same for
    every token; population std (the paper does not say which; TRL's is the sample std); a group whose scores are all
    equal gets 0, not NaN. No KL in the reward: beta times Schulman's k3 per token, pi_ref / pi - log(pi_ref / pi) - 1
    (their eq. 4), averaged like the surrogate (18), is a loss term; 0 with a 0 gradient at pi = pi_ref. Note (Tang &
    Munos 2025): differentiated as a loss on samples of pi, k3's gradient is in expectation that of KL(pi_ref || pi)
    token by token, not the sequence-level KL(pi || pi_ref) that (5)'s penalty and RLOO's optimise; it is the paper's.
    Paper: G = 64 answers a question, beta 0.04, lr 1e-6, one gradient step a rollout batch.
18. Aggregation, and the critiques of Liu et al. 2025 (Dr. GRPO). GRPO's eq. 3 averages each answer's tokens (1 / |o_i|)
    before the answers: a short answer's tokens weigh more, so a positive advantage favours short answers and a
    negative one is diluted in long ones (wrong answers grow longer). Deviation: grpo takes PPO's token-level mean
    over the minibatch (10), so an answer's gradient is its advantage times sum_t grad log pi, the REINFORCE
    direction (rloo's own, 16), times one constant shared by the minibatch. The division by the group's std weights up
    prompts whose answers score nearly alike (a 0.01 spread among four answers becomes +-1): kept by default because
    it is GRPO's; --group_std=false drops it (Dr. GRPO's advantage: RLOO's on the score alone, up to k / (k - 1)).
19. Defaults for rloo and grpo: k = 4 (the larger of Ahmadian et al.'s 2 and 4; GRPO's 64 fill its 1024-answer
    batches, and would leave one prompt an iteration of 64 answers here); beta = 0.1 as PPO's (14): the same RM with
    the same blind spots, and for rloo the same objective, score - beta * KL, so that the estimators differ and not
    the objectives; for grpo 0.1 is 2.5x its paper's 0.04 as PPO's is 5x InstructGPT's 0.02. Learning rate, minibatch
    size and, for grpo, epochs and clip are PPO's; rloo makes one pass, as its paper (16). "tied" logs the fraction of
    groups whose k rewards are equal: they give no gradient (DAPO, Yu et al. 2025, samples more prompts to replace
    them; here they are only counted).

The critic's start. Source: Yuan et al. 2025 ("What's behind PPO's collapse in long-CoT? Value optimization holds the
secret", VC-PPO's value pretraining; verl's critic_warmup and OpenRLHF's freezing_actor_steps do the same).
20. Value warmup. The value model starts as the RM (1), and the RM's score at the end of a prompt is not the return its
    answers will get: on seed 0 it read -0.6 on harmful requests whose sampled refusals scored +1.2 to +3.1. With
    lambda 1 (7) every refusal's first token then got a positive advantage (whitened +1.4), the common curt "N" as
    well as the rarer polite "S", and the clip (10) lets a common token grow more in one iteration than a rare one
    (ratio 1.2: 0.70 -> 0.84, against 0.25 -> 0.30). One iteration took "N" from 0.7 to 0.9, and the polite refusal
    was seldom sampled again: its probability fell 0.25 -> 0.01 by iteration 8 and stayed there, although the RM
    prefers it by 1.2 std on average and RLOO, whose baseline is the other answers to the same prompt (16), moved it
    to 0.79 on the same RM. So for the first vf_warmup iterations the policy stands still: rollouts from SFT, and the
    value model alone fits their returns, unclipped (the clip (11) holds it within 0.2 of values it has to leave by
    ~2), at vf_warmup_lr, 10x the policy's rate. These iterations are logged as steps -3 .. 0 by default (no checkpoint,
    no snapshot, beta not adapted); max_iters counts the policy's iterations, so PPO samples 4 rollout batches more than
    RLOO and GRPO, which have no critic to warm up. Measured, the polite refusal's mean probability on the eval's
    harmful prompts after 32 iterations (SFT 0.25/0.29/0.23 on seeds 0/1/2): no warmup 0.01/0.03/0.49; 4 iterations at
    the policy's 3e-5 0.05/0.89 (seeds 0/1); at 3e-4 0.91/0.93/0.90, and 0.88/0.91 with another PPO seed on seeds 0/1
    (world v2.3's reward models). In run.sh --full (world v2.4): 0.81/0.95/0.88, greedy curt refusals 0 on every
    seed. Not a guarantee: with the same warmup ppo_r2 on seed 2 and PPO-ptx on seed 0 kept most curt refusals (greedy
    1.00 and 0.82). docs/experiments.md "World v2.4: the probes".

A reward a program verifies (RLVR). Sources: Tülu 3 (Lambert et al. 2024, sec. 6: PPO on a verifiable reward, also
added to an RM's score), DeepSeekMath / DeepSeek-R1 (GRPO on rule-based rewards).
21. --reward takes an RM checkpoint, a verifier file (a .py defining verify(record, response) -> float or None,
    computed from the conversation's text: data/assistant/verifier.py), or both, comma-separated. Both: the score
    (4) is the RM's plus verifier_coef times the verifier's reward where it returns one (None: the RM's alone).
    A verifier alone: only the RL prompts it can check are used (verify(record, "") is not None), the score is
    verifier_coef times its reward, and PPO's value model, which (1) starts from the RM, starts from the SFT
    policy's trunk with a zero head (TRL's and OpenRLHF's critics start from the policy or SFT model when there is
    no RM), and the value warmup (20) fits it before the policy moves. Logged: "verified", the mean verifier reward
    of the batch's checkable answers.
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
    verifier_coef: float = 1.0         # (21) weight of the verifier's reward (0 or 1) added to the score
    labeler: str = "data/assistant/labeler.py"  # only to log the batch's gold score; never in the loss ("" = none)
    out_dir: str = "out/ppo"           # checkpoint and log.jsonl go here
    resume: bool = False               # continue from out_dir/ckpt.pt
    estimator: str = "gae"             # advantages: gae (PPO, with a value model; 7), rloo (16) or grpo (17)
    k: int = 4                         # rloo, grpo: answers sampled per prompt, >= 2 (15, 19); gae samples one
    group_std: bool = True             # grpo: divide by the group's score std (17); false: Dr. GRPO's advantage (18)
    max_iters: int = 12                # rollout batches (iterations); the greedy gold stops moving by ~8 here
    batch_size: int = 64               # answers per rollout batch per process: one per prompt (gae), or k (15)
    minibatch_size: int = 16           # answers per PPO update (9)
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
    learning_rate: float = 3e-5        # peak learning rate (policy and value); 3e-4 collapses in 5 iterations
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
    dtype: str = "auto"                # auto: bf16 on GPUs (fp16 before Ampere), fp32 on CPUs
    compile: bool = False              # torch.compile policy and value for the updates (GPUs)


# ----------------------------------------------------------------------------------------------------------------------
# the math, as pure functions on (B, T) tensors with a (B, T) mask of real tokens


def ptx_seed(seed, it, rank, j):
    """(12) The seed of PPO-ptx's corpus windows for minibatch j of iteration it on one rank: distinct for every
    (it, rank, j) with it < 2**20, rank < 2**16 and j < 2**16, so no two ranks or steps draw the same windows (a sum
    seed + 7 j + 100003 it + rank, used before, repeated for 8 ranks or more)."""
    return ((seed * 2**20 + it) * 2**16 + rank) * 2**16 + j


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask):
    """(8) (x - mean) / std over the real tokens only (mask 1); 0 at the pads."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def compute_gae(rewards, values, mask, gamma=1.0, lam=0.95):
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
        self.head = nn.Linear(config.n_embd, 1)

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
    for i in range(0, seq.size(0), chunk):
        x, m = seq[i:i + chunk], mask[i:i + chunk]
        with rt.autocast:
            logp, logp_all = response_logprobs(policy, x, m, P, temperature)
            out["logp"].append(logp)
            out["entropy"].append(-(logp_all.exp() * logp_all).sum(-1))
            out["ref_logp"].append(response_logprobs(ref, x, m, P, temperature)[0])
            if value is not None:
                out["values"].append(value(x, m)[:, P - 1:-1].float())
            out["score"].append(rm(x, m).float() if rm is not None             # (4) at the last real token
                                else torch.zeros(x.size(0), device=x.device))  # (21) a verifier alone
    return {k: torch.cat(v) for k, v in out.items()}


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
        epoch, i = divmod(it * per_iter, len(prompts))
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
                m = fmask[mb]
                with rt.autocast:
                    logp = None if warm else response_logprobs(policy_w, seq[mb], mask[mb], P, cfg.temperature)[0]
                    v = value_w(seq[mb], mask[mb])[:, P - 1:-1].float() if gae else None
                loss = 0.0
                if not warm and cfg.estimator == "rloo":  # (16) REINFORCE on the answer's summed log-prob
                    pg, clipfrac, approx_kl = reinforce_loss(logp, r["logp"][mb], seq_adv[mb], m, cfg.clip)
                    loss = pg
                elif not warm:
                    pg, clipfrac, approx_kl = policy_loss(logp, r["logp"][mb], advantages[mb], m, cfg.clip)  # (10)
                    loss = pg
                if gae:  # (11); unclipped in the warmup (20): the old values are the RM's guesses it has to leave
                    vf = value_loss(v, r["values"][mb], returns[mb], m, math.inf if warm else cfg.vf_clip)
                    loss = loss + cfg.vf_coef * vf
                    stats["vf_loss"].append(vf.item())
                if cfg.estimator == "grpo":  # (17) beta * k3 to the reference, token-averaged as the surrogate (18)
                    kl_term = masked_mean(kl_k3(logp * m, r["ref_logp"][mb] * m), m)
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
                    ratio_first = masked_mean(torch.exp(logp - r["logp"][mb]), m).item()
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
