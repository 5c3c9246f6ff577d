"""
Compare policies on held-out prompts by the labeler's gold score, the measure no training stage ever sees.

    python evaluate.py --policies=out/pretrain,out/sft              # table on stdout, numbers in out/eval/results.json
    python evaluate.py --policies=out/pretrain,out/sft,out/ppo,out/dpo --reward=out/reward --snapshots=out/ppo
    python evaluate.py --policies=out/sft,out/sft_scratch --out_dir=out/eval_ablation

Details implemented here:
 1. One greedy answer per prompt of prompts_eval.jsonl (never trained on), generated in batches through the same
    KV-cache path as sample.py --chat (common.generate_batched), with fixed, printed sampling settings.
 2. A chat model (sft, ppo, dpo) gets the prompt in the chat format and answers until <|end|>. The pretrained model
    (stage pretrain) gets the bare prompt as GPT-3 did: the turns' text joined by spaces; its answer is what it
    writes next, up to <|endoftext|> or the length limit.
 3. The labeler (--labeler, data/assistant/labeler.py by default: the hidden human) scores each answer; the table
    gives the mean per instruction family and overall, and the "ideal" row scores the data's reference answers
    (the best achievable).
 4. With --reward: each policy's mean RM score; the RM's held-out accuracy (from its checkpoint); and, on the
    best-of-N candidates (9: N samples of the SFT policy per prompt, temperature 1), the Spearman rank correlation
    of RM score and gold score within each prompt (what PPO and best-of-n rely on) and across all answers (RM
    scores need not be comparable across prompts).
 5. Win rate against the SFT policy, prompt by prompt on the gold score (a tie counts half), with a 95% interval.
 6. KL to SFT: one answer per prompt sampled at T = 1 from the policy, sum over its tokens of log pi - log pi_sft
    (the k1 estimate of KL per answer; PPO's penalty measures the same thing). Mean answer length in characters.
 7. Rows are named as in InstructGPT's figure 1: gpt (the pretrained model), gpt_prompted, sft, ppo (ppo_ptx when
    trained with --ptx_coef), dpo, and best_of_N.
 8. gpt_prompted: the pretrained model behind a few-shot prefix (GPT-3's in-context learning): up to few_shot
    demonstrations (the first single-turn ones of distinct families in sft_train.jsonl) written as prose, the way
    the corpus writes conversations (Mia asked Tom, "..." Tom said, "..."), as many as fit in the context; then
    the prompt in the same prose, and the answer is what the model writes inside Tom's opening quote.
 9. best_of_N (with --reward): the RM's favourite of N answers of the SFT policy sampled at T = 1 (WebGPT;
    reward.best_of_n). Its KL to SFT is the exact value for best-of-n, log N - (N - 1) / N (Stiennon et al. 2020).
    From the same candidates, best-of-n for n = 1, 2, 4, ..., N (the first n of a prompt's N are n independent
    samples): gold and RM score against that KL, the best-of-n over-optimisation curve of Gao et al. 2022.
10. --snapshots=DIR: reward over-optimisation (Gao et al. 2022): gold and RM score of the greedy answers of each
    PPO snapshot DIR/iter_*.pt against its KL to SFT. PPO's reward is the RM; the gold score is what it stands for.
"""

import glob
import json
import math
import os
from dataclasses import asdict, dataclass

import torch

import common
from common import LM_STAGES, answer_logps, check_messages, generate_batched, load_checkpoint, load_labeler, \
    model_from_checkpoint, parse_config, read_jsonl, setup
from reward import best_of_n, encode_answer, load_reward_model, pad_right, score_sequences
from tokenizer import get_tokenizer


@dataclass
class Config:
    policies: str = "out/pretrain,out/sft"  # comma-separated checkpoints (files or run directories)
    data_dir: str = "data/assistant"         # holds prompts_eval.jsonl
    labeler: str = "data/assistant/labeler.py"  # the dataset's hidden human: score(record, response)
    reward: str = ""                          # a reward checkpoint: adds RM scores and their rank correlation with gold
    best_of: int = 8                          # with --reward: a best_of_N row and curve (4, 9); 0 = none
    few_shot: int = 3                         # demonstrations before the prompt for the gpt_prompted row (8); 0 = none
    snapshots: str = ""                       # a PPO run directory whose iter_*.pt snapshots to evaluate (10)
    out_dir: str = "out/eval"                # results.json goes here
    max_new_tokens: int = 64                 # answer length limit
    batch_size: int = 64                     # prompts per generation batch
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"


def check_prompt(record):
    check_messages(record, "user")
    missing = [k for k in ("family", "ideal", "check", "key") if k not in record]
    if missing:
        raise ValueError(f"expected a prompt record with the labeler's fields; missing {', '.join(missing)}")


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


def prose(messages):
    """(8) Turns written as the corpus writes conversations: characters talking in a story, no chat format."""
    said = {"system": 'Tom was told, "{}"', "user": 'Mia asked Tom, "{}"', "assistant": 'Tom said, "{}"'}
    return " ".join(said[m["role"]].format(m["content"]) for m in messages)


def first_demonstrations(path, k):
    """(8) The first k single-turn demonstrations of distinct families."""
    demos, families = [], set()
    for r in read_jsonl(path, check_messages, hint="run python data/assistant/prepare.py"):
        if [m["role"] for m in r["messages"]] == ["user", "assistant"] and r.get("family") not in families:
            demos.append(r)
            families.add(r.get("family"))
        if len(demos) == k:
            break
    return demos


def answer_few_shot(ckpt, records, demos, cfg, rt):
    """(8) The pretrained model's answers behind a prose few-shot prefix: (texts, finished, mean shots)."""
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    limit = model.config.block_size - cfg.max_new_tokens
    prompts, shots = [], 0
    for r in records:
        query = prose(r["messages"]) + ' Tom said, "'
        used = 0
        while used < len(demos) and len(tok.encode(prose_prefix(demos[:used + 1]) + query)) <= limit:
            used += 1
        prompts.append(tok.encode(prose_prefix(demos[:used]) + query))
        shots += used
    out = generate_batched(model, prompts, rt, tok.pad_id, tok.eot_id, cfg.max_new_tokens, batch_size=cfg.batch_size)
    texts = [tok.decode(ids) for ids, _ in out]
    return [t.split('"')[0] for t in texts], ['"' in t for t in texts], shots / len(records)


def prose_prefix(demos):
    return "".join(prose(d["messages"]) + " " for d in demos)


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


@torch.no_grad()
def kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, generator):
    """(6) KL(pi || pi_sft) per answer, the k1 estimate: one answer per prompt sampled from the policy at T = 1,
    the sum over its tokens (and its <|end|>) of log pi - log pi_sft, averaged over prompts."""
    tok = get_tokenizer(ckpt["tokenizer"])
    policy, sft = (model_from_checkpoint(c, dropout=0.0).to(rt.device).eval() for c in (ckpt, sft_ckpt))
    limit = policy.config.block_size - cfg.max_new_tokens
    prompts = [tok.render_prompt(r["messages"])[-limit:] for r in records]
    out = generate_batched(policy, prompts, rt, tok.pad_id, tok.end_id, cfg.max_new_tokens, temperature=1.0,
                           batch_size=cfg.batch_size, generator=generator)
    total = 0.0
    for i in range(0, len(prompts), cfg.batch_size):
        seqs = [p + ids + ([tok.end_id] if done else []) for p, (ids, done) in
                zip(prompts[i:i + cfg.batch_size], out[i:i + cfg.batch_size])]
        idx, mask = pad_right(seqs, tok.pad_id, rt.device)                                   # (B, T)
        start = torch.tensor([len(p) for p in prompts[i:i + cfg.batch_size]], device=rt.device)
        total += (answer_logps(policy, idx, mask, start, rt) - answer_logps(sft, idx, mask, start, rt)).sum().item()
    return total / len(prompts)


def win_rate(scores, baseline):
    """(5) The share of prompts on which scores beats baseline (a tie counts half), with a 95% interval: the normal
    approximation over prompts, mean +- 1.96 * sd / sqrt(n)."""
    w = torch.tensor([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline)],
                     dtype=torch.float64)
    half = 1.96 * float(w.std()) / len(w) ** 0.5 if len(w) > 1 else 0.0
    m = float(w.mean())
    return m, [max(0.0, m - half), min(1.0, m + half)]


def row_name(ckpt, path, taken):
    """gpt, sft, ppo, ppo_ptx or dpo (InstructGPT's names); the run directory when two policies share one."""
    name = {"pretrain": "gpt", "ppo": "ppo_ptx" if ckpt["config"].get("ptx_coef", 0) > 0 else "ppo"}.get(
        ckpt["stage"], ckpt["stage"])
    if name in taken:
        name = os.path.basename(os.path.dirname(os.path.abspath(common.ckpt_path(path))))
    while name in taken:
        name += "'"
    return name


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    labeler = load_labeler(cfg.labeler, required=True)  # (3) the hidden human of this dataset

    records = read_jsonl(os.path.join(cfg.data_dir, "prompts_eval.jsonl"), check_prompt,
                         hint="run python data/assistant/prepare.py")
    families = sorted({r["family"] for r in records})
    print(f"{len(records)} held-out prompts; greedy decoding, at most {cfg.max_new_tokens} new tokens")

    def summary(scores):
        by = {f: [s for s, r in zip(scores, records) if r["family"] == f] for f in families}
        return {**{f: sum(v) / len(v) for f, v in by.items()}, "all": sum(scores) / len(scores)}

    results = {"policies": {}, "settings": asdict(cfg)}
    rm, sft_ckpt, picks = None, None, []
    if cfg.reward:
        rm, rm_ckpt = load_reward_model(cfg.reward)
        rm.to(rt.device)
        results["reward_model"] = {"val_accuracy": rm_ckpt["val_accuracy"],
                                   "length_baseline_accuracy": rm_ckpt["length_baseline_accuracy"]}
    demos = first_demonstrations(os.path.join(cfg.data_dir, "sft_train.jsonl"), cfg.few_shot) if cfg.few_shot else []
    policies, golds = {}, {}  # name -> (checkpoint or None, path); name -> gold score per prompt

    def add_row(name, ckpt, path, texts, finished, kl=None, **extra):
        tok = get_tokenizer(ckpt["tokenizer"])
        policies[name] = (ckpt, path)
        golds[name] = [labeler.score(r, t) for r, t in zip(records, texts)]
        res = results["policies"][name] = {
            "checkpoint": path, "gold_score": sum(golds[name]) / len(records), "n_prompts": len(records),
            "win_rate_vs_sft": None, "win_ci95": None, "rm_score": None, "kl_to_sft": kl,
            "mean_len": sum(len(t) for t in texts) / len(texts), **extra,
            "families": {f: v for f, v in summary(golds[name]).items() if f != "all"},
            "examples": [{"prompt": r["messages"][-1]["content"], "answer": t} for r, t in list(zip(records, texts))[:8]]}
        if rm is not None:
            proxy = rm_scores(rm, tok, records, texts, finished, rt)
            res["rm_score"] = sum(proxy) / len(proxy)

    for path in cfg.policies.split(","):
        ckpt = load_checkpoint(path, stages=LM_STAGES, hint="evaluate.py compares language models")
        name = row_name(ckpt, path, policies)
        add_row(name, ckpt, path, *answer(ckpt, records, cfg, rt))
        if ckpt["stage"] == "sft" and sft_ckpt is None:
            sft_ckpt, sft_path = ckpt, path
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
        add_row(f"best_of_{n}", sft_ckpt, sft_path, [tok.decode(p[0]) for p in picks], [p[1] for p in picks], kl=math.log(n) - (n - 1) / n)
    sft_name = next((k for k, (c, _) in policies.items() if c is sft_ckpt), None)
    for name, (ckpt, path) in policies.items():
        res = results["policies"][name]
        if sft_name is None:
            continue
        res["win_rate_vs_sft"], res["win_ci95"] = win_rate(golds[name], golds[sft_name])  # (5)
        if res["kl_to_sft"] is None and ckpt["stage"] != "pretrain":  # (6) the base model reads another format
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            res["kl_to_sft"] = kl_to_sft(ckpt, sft_ckpt, records, cfg, rt, g)

    ideal = summary([labeler.score(r, r["ideal"]) for r in records])
    print(f"{'policy':<14}{'gold':>8}{'win vs sft [95% CI]':>25}{'rm':>8}{'kl':>8}{'len':>7}")
    for name, res in results["policies"].items():
        win = "-" if res["win_rate_vs_sft"] is None else \
            f"{res['win_rate_vs_sft']:.3f} [{res['win_ci95'][0]:.2f}, {res['win_ci95'][1]:.2f}]"
        print(f"{name:<14}{res['gold_score']:>8.3f}{win:>25}{fmt(res['rm_score']):>8}{fmt(res['kl_to_sft'], '.2f'):>8}"
              f"{res['mean_len']:>7.1f}")
    print(f"{'ideal':<14}{ideal['all']:>8.3f}")
    print(f"\ngold score per instruction family ({len(records)} prompts; win rates: ties count half)")
    print(f"{'policy':<14}" + "".join(f"{f:>12}" for f in families))
    for name, res in list(results["policies"].items()) + [("ideal", {"families": ideal})]:
        print(f"{name:<14}" + "".join(f"{res['families'][f]:>12.3f}" for f in families))
    if "gpt_prompted" in results["policies"]:
        print(f"gpt_prompted: {results['policies']['gpt_prompted']['few_shot_mean']:.2f} demonstrations per prompt "
              f"on average fit in the context")

    if cfg.snapshots and sft_ckpt is not None:  # (10)
        sft_row = results["policies"][sft_name]
        steps = [{"step": 0, "kl_to_sft": 0.0, "gold_score": sft_row["gold_score"], "rm_score": sft_row["rm_score"]}]
        for f in sorted(glob.glob(os.path.join(cfg.snapshots, "iter_*.pt")), key=lambda f: int(f.split("_")[-1][:-3])):
            snap = load_checkpoint(f, stages=("ppo",))
            texts, finished = answer(snap, records, cfg, rt)
            g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
            row = {"step": snap["step"], "kl_to_sft": kl_to_sft(snap, sft_ckpt, records, cfg, rt, g),
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
            curve.append({"n": n, "kl_to_sft": math.log(n) - (n - 1) / n,
                          "rm_score": sum(row[j] for row, j in zip(proxy, best)) / len(records),
                          "gold_score": sum(row[j] for row, j in zip(gold, best)) / len(records)})
        results["best_of_n"] = curve
        print(f"\nbest-of-n (Gao et al. 2022): the RM's pick of the first n of {n_max} SFT samples (T=1) per prompt")
        print(f"{'n':>10}{'kl to sft':>11}{'rm':>8}{'gold':>8}")
        for row in curve:
            print(f"{row['n']:>10}{row['kl_to_sft']:>11.2f}{row['rm_score']:>8.3f}{row['gold_score']:>8.3f}")
        within = [spearman(p, g) for p, g in zip(proxy, gold) if len(set(g)) > 1]  # prompts whose samples differ
        stats = {"spearman_within_prompt": sum(within) / max(len(within), 1),
                 "spearman_all": spearman(sum(proxy, []), sum(gold, [])), "samples_per_prompt": n_max}
        results["reward_model"].update(stats)
        print(f"reward model: held-out pairwise accuracy {rm_ckpt['val_accuracy']:.3f} (longer-answer baseline "
              f"{rm_ckpt['length_baseline_accuracy']:.3f}). On those {n_max} samples per prompt: Spearman(RM, gold) "
              f"{stats['spearman_within_prompt']:.3f} within a prompt (mean over {len(within)} prompts whose "
              f"samples differ in gold), {stats['spearman_all']:.3f} across all")
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
