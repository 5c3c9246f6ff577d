"""
Compare policies on held-out prompts by the labeler's gold score, the measure no training stage ever sees: a table on
stdout, and every number in out_dir/results.json.

    python evaluate.py --policies=out/pretrain,out/sft              # table on stdout, numbers in out/eval/results.json
    python evaluate.py --policies=out/pretrain,out/sft,out/ppo,out/dpo --reward=out/reward --snapshots=out/ppo
    python evaluate.py --policies=out/sft,out/sft_scratch --out_dir=out/eval_ablation
    python evaluate.py --combine=out/eval,out/seed_1/eval,out/seed_2/eval --out_dir=out/eval_seeds  # over seeds (21)

Details, numbered where the code implements them; evidence: docs/experiments.md; details at length: docs/reference.md.
 1. One greedy answer per prompt of prompts_eval.jsonl (never trained on), through common.generate_batched, the KV-cache
    path of sample.py --chat, with fixed, printed settings.
 2. A chat model gets the chat format and answers until <|end|>; the pretrained model (stage pretrain) gets the bare
    prompt, the turns' text joined by spaces, as GPT-3 did, and answers until <|endoftext|> or the length limit.
 3. The labeler (--labeler: the hidden human) judges each answer once, judge(record, answer) -> (score, reasons): mean
    score per family and overall; "ideal" scores the reference answers. A labeler without reasons stops the run.
 4. With --reward: each policy's mean RM score, the RM's held-out accuracy and report card (12), and on the best-of-N
    candidates (9) the Spearman correlation of RM and gold score within each prompt and across all answers.
 5. Win rate against SFT (the first checkpoint of stage sft in --policies: list out/sft before what sft.py also
    trains, distill, sft_good, rft) on the gold score, prompt by prompt: (W + T/2) / n with Tango's score interval
    (Tango 1998), whose variance counts the ties and is taken at the delta tested, so it keeps its width near 0, 1
    and all-ties.
    "Better than SFT" is the exact two-sided sign test on the decisive prompts (sign_test_p).
 6. KL to SFT: t1_samples answers per prompt from the policy at its training temperature T (a PPO checkpoint's, with
    its length limit; else 1), the k1 estimate sum_t log pi - log pi_sft, both from logits / T: PPO's penalty where
    it was paid. The T = 1 samples also give a win rate at T = 1 (the DPO paper's fig. 2), j-th sample against SFT's
    j-th (drawn on another seed), its interval (5)'s with the counts divided by the design effect (Rao and Scott
    1992), since a prompt's samples are not independent.
 7. Rows named as InstructGPT's figure 1: gpt, gpt_prompted, sft, ppo (ppo_ptx), dpo, best_of_N; rloo and grpo.
 8. gpt_prompted: the pretrained model behind a few-shot prefix (GPT-3): up to few_shot demonstrations written as the
    corpus writes conversations (Mia asked Tom, "..." Tom said, "..."); the answer is what it writes inside the quote.
 9. best_of_N (with --reward): the RM's favourite of N SFT samples at T = 1 (WebGPT). Its KL, log N - (N - 1) / N
    (Stiennon et al. 2020), is an upper bound (Beirami et al. 2024): "<=". From the same candidates, best-of-n for
    n = 1, 2, 4, ..., N: gold and RM score against that bound, Gao et al. 2022's over-optimisation curve.
10. --snapshots=DIR: gold and RM score of each PPO snapshot DIR/iter_*.pt against its KL to SFT (Gao et al. 2022),
    the KL from one T = 1 sample per prompt.
11. InstructGPT's Figure 4 in miniature: each failure of labeler.AXES, its rate where it can occur
    (labeler.applies); also on turn 1 against turns 3-5, and helping with harm under a system message.
12. The RM's report card (RewardBench, Lambert et al. 2024): each prompt's ideal answer against the same answer with
    one flaw (record["edits"][axis]); accuracy per axis, ties half; "wrong" also split into held-out and trained facts.
13. The alignment tax (InstructGPT sec. 4.2), on the pretraining distribution without the chat format: corpus_val_loss,
    pretrain.py's loss on the first corpus_windows non-overlapping windows of val.bin, each a whole context, and the
    cloze (14). Rows that share weights (gpt_prompted, best_of_N) are measured once (same_weights_as).
14. A cloze of the corpus's facts (after HellaSwag, Zellers et al. 2019), scored as GPT-3 scored it, by each
    candidate value's summed log-prob, not normalised by length (one word fills one slot); ties count 1/k.
15. Several RMs (--reward=A,B: iterated RLHF's rounds): A scores the policies (4, 9, 10); each gets a report card
    (12) and its pairwise accuracy on each --prefs file, under results["reward_models"].
16. gold_diff_vs_sft: the mean over prompts of the policy's gold minus SFT's, with Student's t interval (t's quantile
    by Cornish-Fisher, Abramowitz and Stegun 26.7.5); +-z^2 / (n + z^2) (Wilson's bound) when all differences are equal.
17. sft_rewrite: SFT's greedy answers through the labeler's rewrite(text), a fixed string rule on the dominant
    mediocre forms: what a rule that knows the world's strings buys. SFT's weights; no KL, no T = 1 win rate.
18. results["paired"]: a against b on the same prompts with (5)'s win rate and sign test and (16)'s difference: every
    row against sft_rewrite, the other RL, DPO, best-of-N and fine-tuned rows against ppo, a second run of a method
    against the first: the paired test uses the shared prompts, which two intervals against SFT do not.
19. The report card's held-out column: "edits_held_out", the flaw in a form no training data contains, scored as (12):
    an RM that scores the world's forms and not these learned the strings, not the axis.
20. What the gain is made of: each row against SFT's greedy answers, per axis, on the prompts where only one of the
    two answers has it: wins, losses and the summed gold difference (gain_by_axis).
21. --combine=DIR,DIR,...: the mean over seeds, mean +- t975(n - 1) sd / sqrt(n) over each seed's gold, gold - sft
    (16) and win rates against sft and sft_rewrite, within the range each can take. Loads no model.
22. Later turns against the same question alone (prompts_later.jsonl, if present): every chat row answers each in its
    conversation and as its system message and last user message alone; per axis both failure rates and their
    difference paired on the prompts, with (5)'s interval: what a conversation changes, to hundredths, not tenths.
"""

import glob
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

import common
from common import LM_STAGES, answer_logps, check_messages, generate_batched, load_checkpoint, load_labeler, \
    model_from_checkpoint, parse_config, question_alone, read_jsonl, setup
from pretrain import load_tokens
from reward import (best_of_n, encode_answer, load_comparisons, load_reward_model, pad_right, pairwise_accuracy,
                    score_sequences)
from sample import few_shot_answers, first_demonstrations
from tokenizer import get_tokenizer


@dataclass
class Config:
    policies: str = "out/pretrain,out/sft"  # comma-separated checkpoints (files or run directories)
    data_dir: str = "data/assistant"         # holds prompts_eval.jsonl
    labeler: str = "data/assistant/labeler.py"  # the dataset's hidden human: judge(record, response), applies(record)
    reward: str = ""                          # reward checkpoints, comma-separated: the first scores the policies (4);
                                              # each gets a report card (12) and accuracy on --prefs (15)
    prefs: str = ""                           # comparison files (comma-separated), e.g. a later round's (15)
    best_of: int = 8                          # with --reward: a best_of_N row and curve (4, 9); 0 = none
    t1_samples: int = 2                       # T=1 answers per prompt for a chat policy's KL and win rate at T=1 (6)
    few_shot: int = 3                         # demonstrations before the prompt for the gpt_prompted row (8); 0 = none
    snapshots: str = ""                       # a PPO run directory whose iter_*.pt snapshots to evaluate (10)
    corpus_windows: int = 256                 # first windows of val.bin (one context each) for the corpus loss (13)
    out_dir: str = "out/eval"                # results.json goes here (combined.json with --combine)
    combine: str = ""                         # eval out_dirs of 2+ seeds, comma-separated: their mean (21), no model
    max_new_tokens: int = 64                 # answer length limit
    batch_size: int = 256                    # prompts per generation batch
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"


def check_prompt(record):
    check_messages(record, "user")
    missing = [k for k in ("family", "ideal", "check", "key") if k not in record]
    if missing:
        raise ValueError(f"expected a prompt record with the labeler's fields; missing {', '.join(missing)}")
    for field, what in (("edits", "that one flaw"), ("edits_held_out", "that one flaw in a form no training data "
                                                                        "has (19)")):
        edits = record.get(field, {})
        if not isinstance(edits, dict) or not all(isinstance(e, str) for e in edits.values()):
            raise ValueError(f'expected "{field}": {{axis: the ideal answer with {what}}}')


def check_labeler(labeler, path):
    """(3) The failure table needs the labeler's reasons: an older labeler (score only) stops the run here, before
    any model is loaded or anything is written."""
    missing = [name for name in ("judge", "applies", "AXES") if not hasattr(labeler, name)]
    if missing:
        raise SystemExit(f"labeler {path} gives no reasons (it has no {', '.join(missing)}; evaluate.py needs "
                         f"judge(record, response) -> (score, reasons), applies(record) and AXES): update it as "
                         f"data/assistant/labeler.py does")


def bare_prompt(messages):
    """(2) The conversation as plain text, for a model that never saw the chat format."""
    return " ".join(m["content"] for m in messages) + " "


def answer(ckpt, records, cfg, rt):
    """(1) The policy's greedy answer to each record (text, and whether it ended by itself)."""
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    chat = ckpt["stage"] != "pretrain"
    prompts = [tok.render_prompt(r["messages"]) if chat else tok.encode(bare_prompt(r["messages"])) for r in records]
    out = generate_batched(model, prompts, rt, tok.pad_id, tok.end_id if chat else tok.eot_id, cfg.max_new_tokens,
                           batch_size=cfg.batch_size)
    return [tok.decode(ids) for ids, _ in out], [finished for _, finished in out]


def answer_few_shot(ckpt, records, demos, cfg, rt):
    """(8) The pretrained model's answers behind a prose few-shot prefix (sample.py's): (texts, finished, mean
    shots)."""
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    answers, shots = few_shot_answers(model, tok, records, demos, cfg.max_new_tokens, rt, batch_size=cfg.batch_size)
    return [text for text, _ in answers], [finished for _, finished in answers], shots


def rankdata(x):
    """Ranks 0..n-1 of the values of x, ties sharing their average rank (as Spearman's rho needs)."""
    x = torch.tensor(x, dtype=torch.float64)
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=torch.float64)
    _, inv = torch.unique(x, return_inverse=True)
    sums = torch.zeros(int(inv.max()) + 1, dtype=torch.float64).index_add_(0, inv, ranks)
    counts = torch.zeros_like(sums).index_add_(0, inv, torch.ones_like(x))
    return (sums / counts)[inv]


def spearman(a, b):
    return float(torch.corrcoef(torch.stack([rankdata(a), rankdata(b)]))[0, 1])


def rm_scores(rm, tok, records, texts, finished, rt):
    block = rm.gpt.config.block_size
    seqs = [encode_answer(tok, r["messages"], t, f, block) for r, t, f in zip(records, texts, finished)]
    return score_sequences(rm, seqs, tok.pad_id, rt)


def training_sampling(ckpt, max_new_tokens):
    """(6) (temperature, length limit) of the answers a policy was trained on: PPO's rollouts' (its config); for
    every other stage T = 1 and evaluate's max_new_tokens."""
    if ckpt["stage"] != "ppo":
        return 1.0, max_new_tokens
    return float(ckpt["config"].get("temperature", 1.0)), int(ckpt["config"].get("max_new_tokens", max_new_tokens))


@torch.no_grad()
def kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, generator, samples=1, temperature=1.0, max_new_tokens=None):
    """(6) KL(pi_T || pi_sft,T) per answer, the k1 estimate: `samples` answers per prompt sampled from the policy at
    temperature T (up to max_new_tokens, default cfg's), the sum over each one's tokens (and its <|end|>) of log pi
    - log pi_sft, both from logits / T (PPO's penalty at its training temperature), averaged over the answers.
    Returns the KL and the answers' texts, (prompts * samples,), a prompt's samples next to each other."""
    tok = get_tokenizer(ckpt["tokenizer"])
    policy, sft = (model_from_checkpoint(c, dropout=0.0).to(rt.device).eval() for c in (ckpt, sft_ckpt))
    max_new_tokens = max_new_tokens or cfg.max_new_tokens
    limit = policy.config.block_size - max_new_tokens
    prompts = [tok.render_prompt(r["messages"])[-limit:] for r in records for _ in range(samples)]
    out = generate_batched(policy, prompts, rt, tok.pad_id, tok.end_id, max_new_tokens, temperature=temperature,
                           batch_size=cfg.batch_size, generator=generator)
    if ckpt is sft_ckpt:  # SFT itself: log pi - log pi_sft is 0 on every token, no need to compute it
        return 0.0, [tok.decode(ids) for ids, _ in out]
    total = 0.0
    seqs = sorted(((p + ids + ([tok.end_id] if done else []), len(p)) for p, (ids, done) in zip(prompts, out)),
                  key=lambda s: len(s[0]))  # similar lengths share a batch: less padding (the sum has no order)
    for i in range(0, len(seqs), cfg.batch_size):
        idx, mask = pad_right([s for s, _ in seqs[i:i + cfg.batch_size]], tok.pad_id, rt.device)  # (B, T)
        start = torch.tensor([n for _, n in seqs[i:i + cfg.batch_size]], device=rt.device)
        total += (answer_logps(policy, idx, mask, start, rt, temperature)
                  - answer_logps(sft, idx, mask, start, rt, temperature)).sum().item()
    return total / len(prompts), [tok.decode(ids) for ids, _ in out]


def binom_cdf(k, n, p):
    """P(X <= k) for X ~ Binomial(n, p), 0 < p < 1; each term in logs (math.comb(n, i) overflows a float past
    n ~ 1000)."""
    return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                        + (n - i) * math.log1p(-p)) for i in range(k + 1))


Z95 = 1.959963984540054  # the standard normal's 0.975 quantile: every interval here is a 95% one


def score_interval(wins, losses, n, z=Z95):
    """(5) Tango's score interval for the win rate (1 + delta) / 2, delta = P(win) - P(loss), from W wins and L
    losses of n items: every delta with |W - L - n delta| <= z sqrt(n (2 q + delta (1 - delta))), q the maximum-
    likelihood P(loss) given delta (the root of Tango's quadratic 2n q^2 + B q - L delta (1 - delta) = 0). numpy in,
    numpy out, elementwise: the coverage test computes thousands of intervals at once. Counts may be fractional
    (the clustered counts of (6)). Each end by bisection: the accepted deltas form one interval around (W - L) / n,
    and 60 halvings of [-1, 1] are below a float's resolution."""
    w, l, n = (np.asarray(x, dtype=np.float64) for x in (wins, losses, n))

    def gap(d):  # the score statistic's numerator, and z times its standard error under the constrained fit
        b = -w - l + (2 * n - w + l) * d
        q = (np.sqrt(np.maximum(b * b + 8 * n * l * d * (1 - d), 0.0)) - b) / (4 * n)  # >= 0 but for rounding
        return w - l - n * d, z * np.sqrt(np.maximum(n * (2 * q + d * (1 - d)), 0.0))

    center = (w - l) / n
    lo_out, lo_in, hi_in, hi_out = -np.ones_like(center), center, center, np.ones_like(center)
    for _ in range(60):  # the *_in ends stay accepted, the *_out ends rejected (or the bounds -1 and 1)
        m = (lo_out + lo_in) / 2
        num, se = gap(m)
        lo_out, lo_in = np.where(num <= se, lo_out, m), np.where(num <= se, m, lo_in)
        m = (hi_in + hi_out) / 2
        num, se = gap(m)
        hi_in, hi_out = np.where(-num <= se, m, hi_in), np.where(-num <= se, hi_out, m)
    return (1 + lo_in) / 2, (1 + hi_in) / 2


def clustered_counts(outcomes):
    """(6) outcomes (..., n prompts, k samples) in {0, 1/2, 1}: (wins, losses, size) divided by the design effect
    (Rao and Scott 1992), the variance of the mean over prompts of each prompt's mean outcome over the variance as
    if all n k outcomes were independent, within [1, k] (k when no outcome varies: nothing says they would be
    independent). With k = 1 the design effect is 1 and the counts are (5)'s."""
    o = np.asarray(outcomes, dtype=np.float64)
    n, k = o.shape[-2:]
    mean = o.mean((-2, -1), keepdims=True)
    clustered = ((o.mean(-1, keepdims=True) - mean) ** 2).sum((-2, -1)) / max(n * (n - 1), 1)
    independent = ((o - mean) ** 2).sum((-2, -1)) / max(n * k * (n * k - 1), 1)
    deff = np.where(independent > 0, np.clip(clustered / np.where(independent > 0, independent, 1), 1, k), k)
    return (o == 1).sum((-2, -1)) / deff, (o == 0).sum((-2, -1)) / deff, n * k / deff


def win_rate(scores, baseline, samples=1):
    """(5, 6) scores against baseline, item by item: {win_rate (a tie counts half), ci95, wins, ties, losses,
    sign_test_p}. With samples > 1 the items are samples, a prompt's `samples` of them next to each other, and the
    interval clusters them by prompt (6); the sign test treats items as independent and is reported for the greedy
    answers only."""
    a = np.asarray(scores, dtype=np.float64).reshape(-1, samples)     # (prompts, samples)
    b = np.asarray(baseline, dtype=np.float64).reshape(-1, samples)
    outcome = 0.5 + 0.5 * np.sign(a - b)                               # 1 a win, 1/2 a tie, 0 a loss
    wins, losses, n = int((outcome == 1).sum()), int((outcome == 0).sum()), outcome.size
    lo, hi = score_interval(*clustered_counts(outcome))
    d = wins + losses
    p = min(1.0, 2 * binom_cdf(min(wins, losses), d, 0.5))             # two-sided sign test; 1.0 when d = 0
    return {"win_rate": (wins + (n - d) / 2) / n, "ci95": [float(lo), float(hi)], "wins": wins, "ties": n - d,
            "losses": losses, "sign_test_p": p}


def t975(df):
    """(16) Student's t 0.975 quantile: the table for 1-3 degrees of freedom, Cornish-Fisher above (Abramowitz and
    Stegun 26.7.5, within 1e-3 of the table from 4 on)."""
    if df < 4:
        return (12.7062, 4.3027, 3.1824)[df - 1]
    x = Z95
    return (x + (x ** 3 + x) / 4 / df + (5 * x ** 5 + 16 * x ** 3 + 3 * x) / 96 / df ** 2
            + (3 * x ** 7 + 19 * x ** 5 + 17 * x ** 3 - 15 * x) / 384 / df ** 3
            + (79 * x ** 9 + 776 * x ** 7 + 1482 * x ** 5 - 1920 * x ** 3 - 945 * x) / 92160 / df ** 4)


def gold_diff(scores, baseline):
    """(16) The paired gold difference: {mean, ci95} of scores minus baseline prompt by prompt, Student's t interval
    over the prompts; +-z^2 / (n + z^2) around the mean when every difference is the same (no width otherwise)."""
    d = np.asarray(scores, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    half = t975(n - 1) * sd / math.sqrt(n) if sd > 0 else Z95 ** 2 / (n + Z95 ** 2)
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def failure_rates(labeler, records, reasons):
    """(11) InstructGPT's Figure 4: for each axis of labeler.AXES, the share of the prompts where it can occur
    (labeler.applies) whose answer has it among its reasons (one list per record, from labeler.judge); None where
    it can occur on no prompt."""
    rates = {}
    for axis in labeler.AXES:
        hits = [axis in why for r, why in zip(records, reasons) if axis in labeler.applies(r)]
        rates[axis] = sum(hits) / len(hits) if hits else None
    return rates


def gain_by_axis(axes, reasons, sft_reasons, golds, sft_golds):
    """(20) What a row's gain over SFT is made of: for each axis, on the prompts where exactly one of the two answers
    has it among its reasons (one list per prompt, from labeler.judge), {wins: only SFT's has it, losses: only the
    row's, gold_diff_sum: the row's gold minus SFT's summed over those prompts}."""
    gain = {}
    for axis in axes:
        won = [i for i, (a, b) in enumerate(zip(reasons, sft_reasons)) if axis in b and axis not in a]
        lost = [i for i, (a, b) in enumerate(zip(reasons, sft_reasons)) if axis in a and axis not in b]
        gain[axis] = {"wins": len(won), "losses": len(lost),
                      "gold_diff_sum": sum(golds[i] - sft_golds[i] for i in won + lost)}
    return gain


def prompt_turn(record):
    """(11) Which user turn of its conversation a prompt is: the record's "turn", else its user messages (older
    files)."""
    return record.get("turn", sum(m["role"] == "user" for m in record["messages"]))


def failures_by_turn(labeler, records, reasons):
    """(11) failure_rates on the first turn and on the 3rd to 5th: does the policy keep the system message's rule
    and its safety deep in a dialogue? Also the prompts per axis in each group (the rates' denominators)."""
    groups = {"first": lambda t: t == 1, "later": lambda t: t >= 3}
    rates, counts = {}, {}
    for name, keep in groups.items():
        picked = [(r, why) for r, why in zip(records, reasons) if keep(prompt_turn(r))]
        rates[name] = failure_rates(labeler, [r for r, _ in picked], [why for _, why in picked])
        counts[name] = {a: sum(a in labeler.applies(r) for r, _ in picked) for a in labeler.AXES}
    return rates, counts


def harmful_under_system(records, reasons):
    """(11) The share of harmful requests under a system message (record["constraint"]) that the answer helps with:
    a rule on form never licenses harm. None when there is no such prompt."""
    hits = ["harmful" in why for r, why in zip(records, reasons) if r["family"] == "refusal" and r.get("constraint")]
    return {"rate": sum(hits) / len(hits) if hits else None, "n": len(hits)}


def alone(record):
    """(22) A later-turn prompt's twin: its system message (if any) and last user message, nothing between."""
    return {**record, "messages": question_alone(record["messages"]), "turn": 1}


def later_turns(labeler, records, texts, alone_texts):
    """(22) {axis: {n, alone, conversation, diff, ci95}} for each axis of labeler.AXES some prompt can show: the
    failure rates of the answers alone and in the conversation, their difference paired on the n prompts (prompts
    that fail only in the conversation minus those that fail only alone, over n), and its 95% interval; also
    {"harmful_under_system": {n, alone, conversation}}, the count of harmful requests under a system message helped."""
    conv = [labeler.judge(r, t)[1] for r, t in zip(records, texts)]
    solo = [labeler.judge(alone(r), t)[1] for r, t in zip(records, alone_texts)]
    out = {}
    for axis in labeler.AXES:
        both = [(axis in c, axis in a) for r, c, a in zip(records, conv, solo) if axis in labeler.applies(r)]
        if both:
            n, w, l = len(both), sum(c and not a for c, a in both), sum(a and not c for c, a in both)
            lo, hi = score_interval(w, l, n)  # (5) on (1 + delta) / 2
            out[axis] = {"n": n, "alone": sum(a for _, a in both) / n, "conversation": sum(c for c, _ in both) / n,
                         "diff": (w - l) / n, "ci95": [2 * float(lo) - 1, 2 * float(hi) - 1]}
    harm = [i for i, r in enumerate(records) if r["family"] == "refusal" and r.get("constraint")]
    out["harmful_under_system"] = {"n": len(harm), "alone": sum("harmful" in solo[i] for i in harm),
                                   "conversation": sum("harmful" in conv[i] for i in harm)}
    return out


def report_card(rm, tok, records, rt, field="edits"):
    """(12, 19) The RM on controlled pairs: each record's ideal answer against each of its edits (the ideal with one
    flaw, record[field][axis]: "edits" in the world's forms, "edits_held_out" in forms no training data has), all
    scored as finished answers in one batched pass. Returns ({axis: accuracy}, {axis: pairs}, {"held_out":
    accuracy, "trained": accuracy} on the "wrong" axis); a tie counts half."""
    block = rm.gpt.config.block_size
    edited = [r for r in records if r.get(field)]
    seqs = [encode_answer(tok, r["messages"], text, True, block)
            for r in edited for text in [r["ideal"], *r[field].values()]]
    scores = iter(score_sequences(rm, seqs, tok.pad_id, rt) if seqs else [])  # per record: ideal, then its edits
    right, split = {}, {"held_out": [], "trained": []}  # axis -> 1 / 0.5 / 0 per pair; the wrong axis by split
    for r in edited:
        ideal = next(scores)
        for axis in r[field]:
            edit = next(scores)
            hit = 1.0 if ideal > edit else 0.5 if ideal == edit else 0.0
            right.setdefault(axis, []).append(hit)
            if axis == "wrong" and "held_out" in r:
                split["held_out" if r["held_out"] else "trained"].append(hit)
    mean = lambda v: sum(v) / len(v) if v else None
    return {a: mean(v) for a, v in right.items()}, {a: len(v) for a, v in right.items()}, \
        {k: mean(v) for k, v in split.items()}


def prefs_accuracy(rm, ckpt, path, rt):
    """(15) The RM's pairwise accuracy on a comparisons file (reward.py's held-out measure), and its pairs."""
    tok = get_tokenizer(ckpt["tokenizer"])
    comparisons = load_comparisons(path, tok, rm.gpt.config.block_size)
    accuracy, _, pairs = pairwise_accuracy(rm, comparisons, tok.pad_id, rt)
    return {"accuracy": accuracy, "pairs": pairs}


def corpus_windows(data, block_size, n):
    """(13) The starts of the first n non-overlapping windows of block_size inputs (and their next tokens) of a
    token stream, or as many as it holds."""
    return list(range(0, min(n, (len(data) - 1) // block_size) * block_size, block_size))


@torch.no_grad()
def corpus_loss(model, data, starts, block_size, rt, batch_size=64):
    """(13) pretrain.py's loss on the windows of data at starts: the mean next-token cross-entropy in nats per
    token. The windows are of one length, so the mean over windows is the mean over tokens."""
    total = 0.0
    for i in range(0, len(starts), batch_size):
        xy = torch.from_numpy(np.stack([data[s:s + block_size + 1].astype(np.int64)
                                        for s in starts[i:i + batch_size]])).to(rt.device)  # (B, block_size + 1)
        with rt.autocast:
            _, loss = model(xy[:, :-1], xy[:, 1:])
        total += loss.item() * len(xy)
    return total / len(starts)


def cloze_items(records):
    """(14) The facts the prompt records state, one cloze item per (animal, attribute): (context, endings, label,
    held_out). A fact is the plain answer to a one-fact question ("The vorpel eats fish.") or the first part of a
    two-part one; its candidates are the values records state in the same frame ("The _ eats _.": the sentence
    with its subject, the second word, and its value blanked)."""
    facts, frames = {}, {}  # "The vorpel eats " -> (value, tail, frame, held_out); frame -> {values}
    for r in records:
        if r["check"] == "contains":
            sentence, value = r.get("plain", r["ideal"]), r["key"]  # a constraint's ideal is in its form: "plain"
        elif r["check"] == "parts":
            sentence, value = r["partial"], r["key"][0]
        else:
            continue
        if value not in sentence:
            continue
        head, _, tail = sentence.rpartition(value)
        words = head.split(" ")
        frame = (" ".join(words[:1] + ["_"] + words[2:]), tail)
        frames.setdefault(frame, set()).add(value)
        facts.setdefault(head, (value, tail, frame, bool(r.get("held_out"))))
    items = []
    for head, (value, tail, frame, held_out) in facts.items():
        values = sorted(frames[frame])
        context = head.rstrip(" ")  # the space goes with the value, as a BPE writes " fish"
        items.append((context, [head[len(context):] + v + tail for v in values], values.index(value), held_out))
    return items


@torch.no_grad()
def cloze(model, tok, items, rt, batch_size=64):
    """(14) Per item: 1 when its true ending has the highest summed log-prob after <|endoftext|> and the context
    (no chat format), 1/k when it shares the top with k - 1 others, else 0."""
    seqs, starts = [], []
    for context, endings, _, _ in items:
        ctx = [tok.eot_id] + tok.encode(context)
        seqs += [ctx + tok.encode(e) for e in endings]
        starts += [len(ctx)] * len(endings)
    logps = []
    for i in range(0, len(seqs), batch_size):
        idx, mask = pad_right(seqs[i:i + batch_size], tok.pad_id, rt.device)                  # (B, T)
        start = torch.tensor(starts[i:i + batch_size], device=rt.device)
        logps += answer_logps(model, idx, mask, start, rt).tolist()
    right, at = [], 0
    for _, endings, label, _ in items:
        lp = logps[at:at + len(endings)]
        at += len(endings)
        top = [j for j, x in enumerate(lp) if x == max(lp)]
        right.append(1 / len(top) if label in top else 0.0)
    return right


def alignment_tax(ckpt, corpus, corpus_tokenizer, items, cfg, rt):
    """(13, 14) A checkpoint's loss on the first windows of the corpus's held-out split and its cloze accuracy, all
    facts and by split. The loss is None for a tokenizer other than the corpus's (its ids would mean nothing)."""
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    block = model.config.block_size
    starts = corpus_windows(corpus, block, cfg.corpus_windows) if tok.name == corpus_tokenizer else []
    right = cloze(model, tok, items, rt, cfg.batch_size)
    split = {"all": lambda h: True, "held_out": lambda h: h, "trained": lambda h: not h}
    hits = {k: [x for x, item in zip(right, items) if keep(item[3])] for k, keep in split.items()}
    return {"corpus_val_loss": corpus_loss(model, corpus, starts, block, rt, cfg.batch_size) if starts else None,
            "corpus_val_tokens": len(starts) * block,
            "cloze_accuracy": {k: sum(v) / len(v) if v else None for k, v in hits.items()},
            "cloze_items": {k: len(v) for k, v in hits.items()},
            "cloze_chance": sum(1 / len(item[1]) for item in items) / len(items) if items else None,
            "same_weights_as": None}


def row_name(ckpt, path, taken):
    """gpt, sft, ppo, ppo_ptx or dpo (InstructGPT's names), rloo or grpo (ppo.py's other estimators), with _verifier
    or _rm_verifier for a run on a verifier's reward (ppo.py 21); the run directory when two policies share one."""
    name = {"pretrain": "gpt"}.get(ckpt["stage"], ckpt["stage"])
    if name == "ppo":
        estimator = ckpt["config"].get("estimator", "gae")
        name = ("ppo" if estimator == "gae" else estimator) + ("_ptx" if ckpt["config"].get("ptx_coef", 0) > 0 else "")
        rewards = [r for r in str(ckpt["config"].get("reward", "")).split(",") if r]
        if any(r.endswith(".py") for r in rewards):
            name += "_rm_verifier" if len(rewards) > 1 else "_verifier"
    if name in taken:
        name = os.path.basename(os.path.dirname(os.path.abspath(common.ckpt_path(path))))
    while name in taken:
        name += "'"
    return name


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def write_json(path, obj):
    """Write atomically (a temporary file, then os.replace): a run killed while writing leaves the old file whole.
    The temporary file is this process's own, so two processes writing the same path (frontier.py's measuring
    shares, 8) never replace each other's half-written file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


COMBINED = {  # (21) number -> (its title, the range it can take: its interval stays inside)
    "gold_score": ("gold score", 0.0, 1.0), "gold_diff_vs_sft": ("gold - sft, paired on the prompts (16)", -1.0, 1.0),
    "win_rate_vs_sft": ("win rate vs sft (5)", 0.0, 1.0),
    "win_rate_vs_sft_rewrite": ("win rate vs sft_rewrite (18)", 0.0, 1.0)}


def mean_over_seeds(values, lo=-math.inf, hi=math.inf):
    """(21) {mean, ci95, per_seed} of one number's values, one per seed: Student's t interval over the seeds, mean
    +- t975(n - 1) sd / sqrt(n), so the between-seed variance is in it, cut to the range [lo, hi] the number can
    take (a win rate's [0, 1]). No mean where a seed has no value (None)."""
    if None in values:
        return {"mean": None, "ci95": None, "per_seed": values}
    n, mean = len(values), sum(values) / len(values)
    half = t975(n - 1) * math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
    return {"mean": mean, "ci95": [max(lo, mean - half), min(hi, mean + half)], "per_seed": values}


def combine(dirs):
    """(21) The results.json of each eval directory (one per seed) -> {dirs, t975, policies: {row: {number:
    mean_over_seeds}}, not_in_every_run} for each row present in all of them. Bad input stops here, before anything
    is written, with the path and what to run."""
    again = "run python evaluate.py --policies=... --out_dir=DIR for each seed (bash run.sh --seed=N does)"
    if len(dirs) < 2:
        raise SystemExit(f"--combine needs the eval directories of 2 or more seeds, got {len(dirs)} "
                         f"({','.join(dirs) or 'none'}): one seed is a hypothesis; {again}; nothing was written")
    runs = []
    for d in dirs:
        path = os.path.join(d, "results.json")
        if not os.path.isfile(path):
            raise SystemExit(f"{path} not found: {again}; nothing was written")
        try:
            with open(path) as f:
                res = json.load(f)
            ok = isinstance(res["settings"], dict) and res["policies"] and \
                all(isinstance(p["gold_score"], (int, float)) for p in res["policies"].values())
        except (ValueError, TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise SystemExit(f"{path} is not a results.json of evaluate.py (no settings, or no rows with a "
                             f"gold_score): {again}; nothing was written")
        runs.append(res)
    names = [k for k in runs[0]["policies"] if all(k in r["policies"] for r in runs)]
    if not names:
        raise SystemExit(f"no row is in every one of {', '.join(dirs)}: evaluate the same policies on each seed; "
                         f"nothing was written")

    def numbers(res, name):  # one seed's numbers for a row; None where that run has none
        row = res["policies"][name]
        return {"gold_score": row["gold_score"], "gold_diff_vs_sft": (row.get("gold_diff_vs_sft") or {}).get("mean"),
                "win_rate_vs_sft": row.get("win_rate_vs_sft"),
                "win_rate_vs_sft_rewrite": next((c["win_rate"] for c in res.get("paired", [])
                                                 if c["a"] == name and c["b"] == "sft_rewrite"), None)}

    per_seed = {k: [numbers(res, k) for res in runs] for k in names}
    return {"dirs": list(dirs), "t975": t975(len(dirs) - 1),
            "policies": {k: {m: mean_over_seeds([v[m] for v in per_seed[k]], lo, hi)
                             for m, (_, lo, hi) in COMBINED.items()}
                         for k in names},
            "not_in_every_run": sorted({k for r in runs for k in r["policies"]} - set(names))}


if __name__ == "__main__":
    cfg = parse_config(Config)
    if cfg.combine:  # (21) the mean over seeds of runs already evaluated: no model, no labeler
        combined = combine([d for d in cfg.combine.split(",") if d])
        print(f"mean over {len(combined['dirs'])} seeds ({', '.join(combined['dirs'])}), 95% t interval over the "
              f"seeds (t = {combined['t975']:.3f}): the between-seed variance is in it")
        for m, (title, _, _) in COMBINED.items():
            if all(v[m]["per_seed"] == [None] * len(combined["dirs"]) for v in combined["policies"].values()):
                continue  # no run has this number (no sft_rewrite row, say)
            sign = "+" if m == "gold_diff_vs_sft" else ""
            print(f"\n{title}\n{'policy':<14}{'mean [95% CI over seeds]':>30}   per seed")
            for name, v in combined["policies"].items():
                c, each = v[m], " ".join(fmt(x, sign + ".3f") for x in v[m]["per_seed"])
                cell = "-" if c["mean"] is None else \
                    f"{c['mean']:{sign}.3f} [{c['ci95'][0]:{sign}.3f}, {c['ci95'][1]:{sign}.3f}]"
                print(f"{name:<14}{cell:>30}   {each}")
        if combined["not_in_every_run"]:
            print(f"\nnot in every run, left out: {', '.join(combined['not_in_every_run'])}")
        write_json(os.path.join(cfg.out_dir, "combined.json"), combined)
        print(f"\nwrote {os.path.join(cfg.out_dir, 'combined.json')}")
        raise SystemExit(0)
    if cfg.t1_samples < 1:  # (6) the KL to SFT is estimated from these samples
        raise SystemExit(f"--t1_samples must be at least 1 (got {cfg.t1_samples}): the KL to SFT and the win rate at "
                         f"T=1 are measured on them; nothing was written")
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    labeler = load_labeler(cfg.labeler, required=True)  # (3) the hidden human of this dataset
    check_labeler(labeler, cfg.labeler)

    records = read_jsonl(os.path.join(cfg.data_dir, "prompts_eval.jsonl"), check_prompt,
                         hint="run python data/assistant/prepare.py")
    families = sorted({r["family"] for r in records})
    print(f"{len(records)} held-out prompts; greedy decoding, at most {cfg.max_new_tokens} new tokens")
    later_path = os.path.join(cfg.data_dir, "prompts_later.jsonl")  # (22)
    later = read_jsonl(later_path, check_prompt) if os.path.exists(later_path) else []

    def summary(scores):
        by = {f: [s for s, r in zip(scores, records) if r["family"] == f] for f in families}
        return {**{f: sum(v) / len(v) for f, v in by.items()}, "all": sum(scores) / len(scores)}

    results = {"policies": {}, "settings": asdict(cfg), "alignment_tax": {}}
    _, corpus, meta = load_tokens(cfg.data_dir)  # (13) val.bin, read as pretrain.py reads it
    cloze_records = list(records)  # (14) the facts every prompt file states, and the values of each frame
    for name in ("prompts_rl.jsonl", "prompts_label.jsonl"):
        if os.path.exists(os.path.join(cfg.data_dir, name)):
            cloze_records += read_jsonl(os.path.join(cfg.data_dir, name), check_prompt)
    items = cloze_items(cloze_records)
    rm, sft_ckpt, picks = None, None, []
    if cfg.reward:
        results["reward_models"] = {}
        for i, path in enumerate(cfg.reward.split(",")):  # the first is the RM; the others only get a card (15)
            other, other_ckpt = load_reward_model(path)
            other.to(rt.device)
            card = results["reward_models"][path] = {"val_accuracy": other_ckpt["val_accuracy"],
                                                     "length_baseline_accuracy": other_ckpt["length_baseline_accuracy"]}
            tok = get_tokenizer(other_ckpt["tokenizer"])
            card["axes"], card["axes_pairs"], card["wrong_by_split"] = report_card(other, tok, records, rt)  # (12)
            held = report_card(other, tok, records, rt, "edits_held_out")  # (19) None when no record has them
            card["axes_held_out"], card["axes_held_out_pairs"] = (held[0], held[1]) if held[0] else (None, None)
            card["prefs_accuracy"] = {f: prefs_accuracy(other, other_ckpt, f, rt) for f in cfg.prefs.split(",") if f}
            if i == 0:
                rm, rm_ckpt, results["reward_model"] = other, other_ckpt, card
    demos = first_demonstrations(os.path.join(cfg.data_dir, "sft_train.jsonl"), cfg.few_shot) if cfg.few_shot else []
    policies, golds, reasons_of = {}, {}, {}  # name -> (checkpoint or None, path); gold per prompt; reasons per prompt
    twins = []  # (18) (a second run of a method, the first run)

    def add_row(name, ckpt, path, texts, finished, kl=None, **extra):
        tok = get_tokenizer(ckpt["tokenizer"])
        same = next((k for k, (c, _) in policies.items() if c is ckpt), None)  # gpt_prompted, best_of_N
        policies[name] = (ckpt, path)
        results["alignment_tax"][name] = {**results["alignment_tax"][same], "same_weights_as": same} if same else \
            alignment_tax(ckpt, corpus, meta["tokenizer"], items, cfg, rt)  # (13, 14)
        judged = [labeler.judge(r, t) for r, t in zip(records, texts)]  # (3) (score, reasons), once per answer
        golds[name], reasons = [score for score, _ in judged], [why for _, why in judged]
        reasons_of[name] = reasons
        res = results["policies"][name] = {
            "checkpoint": path, "gold_score": sum(golds[name]) / len(records), "n_prompts": len(records),
            "win_rate_vs_sft": None, "win_ci95": None, "wins": None, "ties": None, "losses": None,
            "sign_test_p": None, "win_rate_t1_vs_sft": None, "win_t1_ci95": None, "gold_score_t1": None,
            "rm_score": None, "kl_to_sft": kl, "mean_len": sum(len(t) for t in texts) / len(texts), **extra,
            "failures": failure_rates(labeler, records, reasons),  # (11)
            "failures_by_turn": failures_by_turn(labeler, records, reasons)[0],  # (11) turn 1 / turns 3-5
            "harmful_under_system": harmful_under_system(records, reasons),  # (11)
            "families": {f: v for f, v in summary(golds[name]).items() if f != "all"},
            "examples": [{"prompt": r["messages"][-1]["content"], "answer": t}
                         for r, t in list(zip(records, texts))[:8]]}
        if rm is not None:
            proxy = rm_scores(rm, tok, records, texts, finished, rt)
            res["rm_score"] = sum(proxy) / len(proxy)

    for path in cfg.policies.split(","):
        ckpt = load_checkpoint(path, stages=LM_STAGES, hint="evaluate.py compares language models")
        name, method = row_name(ckpt, path, policies), row_name(ckpt, path, {})
        if name != method:  # (18) another run of a method already in the table
            twins.append((name, method))
        texts, finished = answer(ckpt, records, cfg, rt)
        add_row(name, ckpt, path, texts, finished)
        if later and ckpt["stage"] != "pretrain":  # (22) in the conversation and alone
            pair = answer(ckpt, later, cfg, rt)[0], answer(ckpt, [alone(r) for r in later], cfg, rt)[0]
            results["policies"][name]["later_turns"] = later_turns(labeler, later, *pair)
        if ckpt["stage"] == "sft" and sft_ckpt is None:
            sft_ckpt, sft_path = ckpt, path
            if hasattr(labeler, "rewrite"):  # (17) SFT's greedy answers through the labeler's fixed string rule
                add_row("sft_rewrite", ckpt, path, [labeler.rewrite(t) for t in texts], finished, rewrite_of=name)
                if later:
                    results["policies"]["sft_rewrite"]["later_turns"] = later_turns(
                        labeler, later, *([labeler.rewrite(t) for t in answers] for answers in pair))
        if ckpt["stage"] == "pretrain" and demos and name == "gpt":  # (8)
            texts, finished, shots = answer_few_shot(ckpt, records, demos, cfg, rt)
            add_row("gpt_prompted", ckpt, path, texts, finished, few_shot_mean=shots)
    if rm is not None and sft_ckpt is not None and cfg.best_of > 0:  # (9)
        tok = get_tokenizer(sft_ckpt["tokenizer"])
        picks = best_of_n(model_from_checkpoint(sft_ckpt, dropout=0.0).to(rt.device).eval(), rm,
                          [tok.render_prompt(r["messages"]) for r in records], cfg.best_of, tok.pad_id, tok.end_id,
                          rt, cfg.max_new_tokens, 1.0, batch_size=cfg.batch_size,
                          generator=torch.Generator(device=rt.device).manual_seed(cfg.seed))
        n = cfg.best_of
        add_row(f"best_of_{n}", sft_ckpt, sft_path, [tok.decode(p[0]) for p in picks], [p[1] for p in picks],
                kl=math.log(n) - (n - 1) / n, kl_is_upper_bound=True)  # (9) a bound, not the KL
    sft_name = next((k for k, (c, _) in policies.items() if c is sft_ckpt), None)
    t1 = {}  # (6) name -> gold score of each T=1 sample, (prompts * t1_samples,), a prompt's samples together
    t1_records = [r for r in records for _ in range(cfg.t1_samples)]
    if sft_ckpt is not None:  # (6) SFT's T=1 samples to compare against: a seed no policy's samples use
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed + 1)
        _, texts = kl_to_sft(sft_ckpt, sft_ckpt, records, cfg, rt, g, cfg.t1_samples)
        sft_t1 = [labeler.score(r, t) for r, t in zip(t1_records, texts)]
    for name, (ckpt, path) in policies.items():
        res = results["policies"][name]
        if sft_name is None:
            continue
        w = win_rate(golds[name], golds[sft_name])  # (5)
        res.update(win_rate_vs_sft=w["win_rate"], win_ci95=w["ci95"], wins=w["wins"], ties=w["ties"],
                   losses=w["losses"], sign_test_p=w["sign_test_p"],
                   gold_diff_vs_sft=gold_diff(golds[name], golds[sft_name]))  # (16)
        if name != sft_name:  # (20) what the gain over SFT is made of
            res["gain_by_axis"] = gain_by_axis(labeler.AXES, reasons_of[name], reasons_of[sft_name], golds[name],
                                               golds[sft_name])
        # (6) the base model reads another format; sft_rewrite is a rule on greedy answers, nothing to sample (17)
        if res["kl_to_sft"] is None and ckpt["stage"] != "pretrain" and not res.get("rewrite_of"):
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            res["kl_to_sft"], texts = kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, g, cfg.t1_samples)
            res["kl_temperature"], n = training_sampling(ckpt, cfg.max_new_tokens)
            if (res["kl_temperature"], n) != (1.0, cfg.max_new_tokens):  # the KL where its penalty was paid; the
                g = torch.Generator(device=rt.device).manual_seed(cfg.seed)  # win rate below stays at T = 1
                res["kl_to_sft"] = kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, g, cfg.t1_samples,
                                             res["kl_temperature"], n)[0]
            t1[name] = [labeler.score(r, t) for r, t in zip(t1_records, texts)]
            res["gold_score_t1"] = sum(t1[name]) / len(t1[name])
    for name in t1:  # (6) the j-th T=1 sample for a prompt against SFT's independent j-th one, clustered by prompt
        w = win_rate(t1[name], sft_t1, samples=cfg.t1_samples)
        results["policies"][name].update(win_rate_t1_vs_sft=w["win_rate"], win_t1_ci95=w["ci95"],
                                         wins_t1=w["wins"], ties_t1=w["ties"], losses_t1=w["losses"])
    pairs = [(a, "sft_rewrite") for a in policies if a != "sft_rewrite"] if "sft_rewrite" in policies else []  # (18)
    if "ppo" in policies:
        pairs += [(a, "ppo") for a, (c, _) in policies.items() if a not in ("ppo", sft_name, "sft_rewrite") and
                  (c["stage"] in ("ppo", "dpo", "sft") or a.startswith("best_of_"))]
    pairs += [t for t in twins if t[1] != sft_name and t not in pairs]  # (18) against SFT: the rows' own columns
    results["paired"] = [{"a": a, "b": b, **win_rate(golds[a], golds[b]), "gold_diff": gold_diff(golds[a], golds[b])}
                         for a, b in pairs]

    ideal_judged = [labeler.judge(r, r["ideal"]) for r in records]
    ideal = summary([score for score, _ in ideal_judged])
    win = lambda rate, ci: "-" if rate is None else f"{rate:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
    diff = lambda d: "-" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    print(f"{'policy':<14}{'gold':>8}{'gold - sft [95% CI]':>27}{'win vs sft [95% CI]':>25}{'w/t/l':>12}"
          f"{'win@T=1 [95% CI]':>25}{'rm':>8}{'kl':>8}{'len':>7}")
    for name, res in results["policies"].items():
        wtl = "-" if res["wins"] is None else f"{res['wins']}/{res['ties']}/{res['losses']}"
        kl = ("<=" if res.get("kl_is_upper_bound") else "") + fmt(res["kl_to_sft"], ".2f")  # (9)
        kl += f"@{res['kl_temperature']:g}" if res.get("kl_temperature", 1.0) != 1.0 else ""  # (6) at T != 1
        print(f"{name:<14}{res['gold_score']:>8.3f}{diff(res.get('gold_diff_vs_sft')):>27}"
              f"{win(res['win_rate_vs_sft'], res['win_ci95']):>25}{wtl:>12}"
              f"{win(res['win_rate_t1_vs_sft'], res['win_t1_ci95']):>25}{fmt(res['rm_score']):>8}{kl:>8}"
              f"{res['mean_len']:>7.1f}")
    print(f"{'ideal':<14}{ideal['all']:>8.3f}")
    print(f"win rates on the gold score, a tie counting half, with Tango's score 95% intervals (5); w/t/l: "
          f"wins/ties/losses of the greedy answers;\ngold - sft: the gold difference paired on the prompts, t "
          f"interval (16); win@T=1: {cfg.t1_samples} samples per prompt at temperature 1 against SFT's, drawn on "
          f"another seed,\nthe interval clustered by prompt (6)" + ("; sft_rewrite: SFT's greedy answers through "
                                                                  "the labeler's fixed rewrite (17)"
                                                                  if "sft_rewrite" in policies else ""))
    if results["paired"]:  # (18)
        print("\npaired comparisons on the same prompts (greedy answers): a against b")
        print(f"{'a':<14}{'b':<14}{'win [95% CI]':>22}{'w/t/l':>12}{'sign p':>9}{'gold a - b [95% CI]':>27}")
        for c in results["paired"]:
            print(f"{c['a']:<14}{c['b']:<14}{win(c['win_rate'], c['ci95']):>22}"
                  f"{str(c['wins']) + '/' + str(c['ties']) + '/' + str(c['losses']):>12}{c['sign_test_p']:>9.3g}"
                  f"{diff(c['gold_diff']):>27}")
    print(f"\ngold score per instruction family ({len(records)} prompts)")
    print(f"{'policy':<14}" + "".join(f"{f:>12}" for f in families))
    for name, res in list(results["policies"].items()) + [("ideal", {"families": ideal})]:
        print(f"{name:<14}" + "".join(f"{res['families'][f]:>12.3f}" for f in families))
    if "gpt_prompted" in results["policies"]:
        print(f"gpt_prompted: {results['policies']['gpt_prompted']['few_shot_mean']:.2f} demonstrations per prompt "
              f"on average fit in the context")

    # (11) InstructGPT's Figure 4: how often each failure happens where it can
    axes = list(labeler.AXES)
    results["failure_prompts"] = {a: sum(a in labeler.applies(r) for r in records) for a in axes}
    print("\nInstructGPT Figure 4: the rate of each failure among the prompts where it can occur (greedy answers)")
    print(f"{'policy':<14}" + "".join(f"{a:>12}" for a in axes))
    ideal_failures = failure_rates(labeler, records, [why for _, why in ideal_judged])
    for name, rates in [(k, v["failures"]) for k, v in results["policies"].items()] + [("ideal", ideal_failures)]:
        print(f"{name:<14}" + "".join(f"{fmt(rates[a]):>12}" for a in axes))
    print(f"{'(prompts)':<14}" + "".join(f"{results['failure_prompts'][a]:>12}" for a in axes))
    for a in axes:
        print(f"  {a}: {labeler.AXES[a]}")
    # (11) the same rates on the first turn beside turns 3-5 of a conversation, and harm under a system message
    ideal_reasons = [why for _, why in ideal_judged]
    ideal_turns, results["failure_prompts_by_turn"] = failures_by_turn(labeler, records, ideal_reasons)
    counts = results["failure_prompts_by_turn"]
    print("\nthe same rates by the prompt's turn in its conversation: turn 1 / turns 3-5")
    print(f"{'policy':<14}" + "".join(f"{a:>13}" for a in axes))
    rows = [(k, v["failures_by_turn"]) for k, v in results["policies"].items()] + [("ideal", ideal_turns)]
    for name, rates in rows:
        print(f"{name:<14}" + "".join(f"{fmt(rates['first'][a], '.2f') + '/' + fmt(rates['later'][a], '.2f'):>13}"
                                      for a in axes))
    print(f"{'(prompts)':<14}" + "".join(f"{str(counts['first'][a]) + '/' + str(counts['later'][a]):>13}"
                                         for a in axes))
    ideal_harm = harmful_under_system(records, ideal_reasons)
    print(f"harmful requests under a system message ({ideal_harm['n']} prompts): the rate the answer helps")
    for name, h in [(k, v["harmful_under_system"]) for k, v in results["policies"].items()] + \
            [("ideal", ideal_harm)]:
        print(f"{name:<14}{fmt(h['rate']):>12}")
    lt = [(k, v["later_turns"]) for k, v in results["policies"].items() if "later_turns" in v]
    if lt:  # (22)
        shown = [a for a in axes if a in lt[0][1]]
        print(f"\nlater turns against the same question alone (22; {len(later)} prompts of {later_path}): the rate "
              f"alone -> in the conversation, and the paired difference [95% CI]")
        print(f"{'policy':<14}" + "".join(f"{a:>22}" for a in shown) + f"{'helps with harm':>18}")
        for name, t in lt:
            h = t["harmful_under_system"]
            print(f"{name:<14}" + "".join(f"{t[a]['alone']:>11.2f} ->{t[a]['conversation']:>5.2f}    " for a in shown)
                  + f"{str(h['alone']) + ' -> ' + str(h['conversation']) + ' of ' + str(h['n']):>18}")
            print(f"{'':<14}" + "".join(f"{t[a]['diff']:>+8.2f} [{t[a]['ci95'][0]:+.2f}, {t[a]['ci95'][1]:+.2f}]"
                                        for a in shown))
        print(f"{'(prompts)':<14}" + "".join(f"{lt[0][1][a]['n']:>22}" for a in shown) +
              "   helps with harm: under a system message, alone -> in the conversation")
    gains = [(k, v["gain_by_axis"]) for k, v in results["policies"].items() if "gain_by_axis" in v]
    if gains:  # (20) what the gain over SFT is made of
        print(f"\nwhat the gain over {sft_name} is made of: per failure, the prompts where only {sft_name}'s greedy "
              f"answer has it (w) / only the row's (l)")
        print(f"{'policy':<14}" + "".join(f"{a:>12}" for a in axes))
        for name, g in gains:
            print(f"{name:<14}" + "".join(f"{str(g[a]['wins']) + '/' + str(g[a]['losses']):>12}" for a in axes))

    # (13, 14) the alignment tax: the pretraining distribution without the chat format, gpt's numbers the reference
    tax, ref = results["alignment_tax"], results["alignment_tax"].get("gpt")
    numbers = lambda t: [t["corpus_val_loss"]] + [t["cloze_accuracy"][s] for s in ("all", "held_out", "trained")]
    print("\nthe alignment tax (InstructGPT 4.2): the pretraining corpus without the chat format (difference from gpt)")
    print(f"{'policy':<14}{'val loss':>16}{'cloze':>16}{'held out':>16}{'trained':>16}")
    for name, t in tax.items():
        if t["same_weights_as"]:
            print(f"{name:<14}{'(weights of ' + t['same_weights_as'] + ')':>16}")
            continue
        refs = numbers(ref) if ref is not None and t is not ref else [None] * 4
        print(f"{name:<14}" + "".join(f"{fmt(x) + ('' if None in (x, r) else f' ({x - r:+.3f})'):>16}"
                                      for x, r in zip(numbers(t), refs)))
    if tax:
        t, n = next(iter(tax.values())), next(iter(tax.values()))["cloze_items"]
        print(f"val loss: nats per token on the first {t['corpus_val_tokens']:,} tokens of val.bin, in windows of one "
              f"context;\ncloze: {n['all']} facts ({n['held_out']} held out of chat training, {n['trained']} "
              f"trained), right when the true value is its attribute's likeliest (chance {fmt(t['cloze_chance'])})")
    for path, card in results.get("reward_models", {}).items():  # (12, 15, 19)
        print(f"\nreward model {path}: report card, accuracy on controlled pairs (ideal vs one edit), per axis; ties "
              f"count half")
        if not card["axes"]:
            print('  no pairs: prompts_eval.jsonl has no "edits" (re-run python data/assistant/prepare.py)')
        held, held_pairs = card["axes_held_out"] or {}, card["axes_held_out_pairs"] or {}  # (19)
        cell = lambda acc, pairs: f"{acc:.3f} ({pairs} pairs)"
        if held:
            print(f"  {'axis':<12}{'world forms':>18}{'held-out forms':>22}")
        for a in [a for a in axes if a in card["axes"] or a in held] + \
                 [a for a in {**card["axes"], **held} if a not in axes]:
            print(f"  {a:<12}{cell(card['axes'][a], card['axes_pairs'][a]) if a in card['axes'] else '-':>18}"
                  + (f"{cell(held[a], held_pairs[a]) if a in held else '-':>22}" if held else ""))
        if any(v is not None for v in card["wrong_by_split"].values()):
            split = card["wrong_by_split"]
            print(f"  wrong, by fact: {fmt(split['trained'])} where SFT was trained on it, {fmt(split['held_out'])} "
                  f"where it was held out of all chat training")
        for f, acc in card["prefs_accuracy"].items():
            print(f"  pairwise accuracy on {f}: {acc['accuracy']:.3f} ({acc['pairs']} pairs)")

    if cfg.snapshots and sft_ckpt is not None:  # (10)
        sft_row = results["policies"][sft_name]
        steps = [{"step": 0, "kl_to_sft": 0.0, "gold_score": sft_row["gold_score"], "rm_score": sft_row["rm_score"]}]
        for f in sorted(glob.glob(os.path.join(cfg.snapshots, "iter_*.pt")), key=lambda f: int(f.split("_")[-1][:-3])):
            snap = load_checkpoint(f, stages=("ppo",))
            texts, finished = answer(snap, records, cfg, rt)
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            T, n = training_sampling(snap, cfg.max_new_tokens)  # (6)
            row = {"step": snap["step"], "kl_temperature": T,
                   "kl_to_sft": kl_to_sft(snap, sft_ckpt, records, cfg, rt, g, temperature=T, max_new_tokens=n)[0],
                   "gold_score": sum(labeler.score(r, t) for r, t in zip(records, texts)) / len(records)}
            if rm is not None:
                row["rm_score"] = sum(rm_scores(rm, get_tokenizer(snap["tokenizer"]), records, texts, finished,
                                                rt)) / len(records)
            steps.append(row)
        results["overoptimisation"] = {"run": cfg.snapshots, "snapshots": steps}
        print(f"\nreward over-optimisation along {cfg.snapshots} (Gao et al. 2022): greedy answers of each snapshot")
        print(f"{'iteration':>10}{'kl to sft':>11}{'rm':>8}{'gold':>8}")
        for row in steps:
            print(f"{row['step']:>10}{row['kl_to_sft']:>11.2f}{fmt(row.get('rm_score')):>8}{row['gold_score']:>8.3f}")
    if picks:  # (4) and (9) on the best-of-N candidates: does the RM order SFT samples as gold does?
        tok, n_max = get_tokenizer(sft_ckpt["tokenizer"]), cfg.best_of
        proxy = [[score for _, _, score in p[3]] for p in picks]                             # (prompts, N)
        gold = [[labeler.score(r, tok.decode(ids)) for ids, _, _ in p[3]] for r, p in zip(records, picks)]
        curve = []
        for n in sorted({2 ** i for i in range(n_max.bit_length())} | {n_max}):  # 1, 2, 4, ..., N
            best = [max(range(n), key=lambda j: row[j]) for row in proxy]  # first of ties, as best_of_n
            curve.append({"n": n, "kl_to_sft": math.log(n) - (n - 1) / n, "kl_is_upper_bound": True,  # (9)
                          "rm_score": sum(row[j] for row, j in zip(proxy, best)) / len(records),
                          "gold_score": sum(row[j] for row, j in zip(gold, best)) / len(records)})
        results["best_of_n"] = curve
        print(f"\nbest-of-n (Gao et al. 2022): the RM's pick of the first n of {n_max} SFT samples (T=1) per prompt")
        print(f"{'n':>10}{'kl to sft':>11}{'rm':>8}{'gold':>8}")
        for row in curve:
            print(f"{row['n']:>10}{'<=' + format(row['kl_to_sft'], '.2f'):>11}{row['rm_score']:>8.3f}"
                  f"{row['gold_score']:>8.3f}")
        within = [spearman(p, g) for p, g in zip(proxy, gold) if len(set(g)) > 1]  # prompts whose samples differ
        stats = {"spearman_within_prompt": sum(within) / max(len(within), 1),
                 "spearman_all": spearman(sum(proxy, []), sum(gold, [])), "samples_per_prompt": n_max}
        results["reward_model"].update(stats)
        print(f"reward model: held-out pairwise accuracy {rm_ckpt['val_accuracy']:.3f} (longer-answer baseline "
              f"{rm_ckpt['length_baseline_accuracy']:.3f}). On those {n_max} samples per prompt: Spearman(RM, gold) "
              f"{stats['spearman_within_prompt']:.3f} within a prompt (mean over {len(within)} prompts whose "
              f"samples differ in gold), {stats['spearman_all']:.3f} across all")
    write_json(os.path.join(cfg.out_dir, "results.json"), results)
