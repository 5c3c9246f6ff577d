"""
Compare policies on held-out prompts by the labeler's gold score, the measure no training stage ever sees.

    python evaluate.py --policies=out/pretrain,out/sft              # table on stdout, numbers in out/eval/results.json
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
 4. With --reward: each policy's mean RM score; the RM's held-out accuracy (from its checkpoint); and, on fresh
    samples of the SFT policy (rm_samples per prompt, temperature 1), the Spearman rank correlation of RM score and
    gold score within each prompt (what PPO and best-of-n rely on) and across all answers (RM scores need not be
    comparable across prompts), with the gold score of the RM's pick among each prompt's samples.
Win rates, KL to SFT, best-of-n and the GPT-prompted row come with the later stages.
"""

import json
import os
import sys
from dataclasses import asdict, dataclass

import torch

import common
from common import LM_STAGES, check_messages, generate_batched, load_checkpoint, model_from_checkpoint, \
    parse_config, read_jsonl, setup
from reward import encode_answer, load_reward_model, score_sequences
from tokenizer import get_tokenizer


@dataclass
class Config:
    policies: str = "out/pretrain,out/sft"  # comma-separated checkpoints (files or run directories)
    data_dir: str = "data/assistant"         # holds prompts_eval.jsonl
    labeler: str = "data/assistant/labeler.py"  # the dataset's hidden human: score(record, response)
    reward: str = ""                          # a reward checkpoint: adds RM scores and their rank correlation with gold
    rm_samples: int = 4                       # with --reward: SFT samples per prompt on which RM and gold are compared
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


def answer(ckpt, records, cfg, rt, temperature=0.0, generator=None):
    """The policy's answer to each record (text, and whether it ended by itself)."""
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    chat = ckpt["stage"] != "pretrain"
    prompts = [tok.render_prompt(r["messages"]) if chat else tok.encode(bare_prompt(r["messages"])) for r in records]
    out = generate_batched(model, prompts, rt, tok.pad_id, tok.end_id if chat else tok.eot_id, cfg.max_new_tokens,
                           temperature=temperature, batch_size=cfg.batch_size, generator=generator)
    return [tok.decode(ids) for ids, _ in out], [finished for _, finished in out]


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


def table(rows, families):
    """rows: {name: {family: mean gold score, "all": mean, "rm": mean RM score (optional)}} -> a text table."""
    cols = families + ["all"] + (["rm"] if any("rm" in r for r in rows.values()) else [])
    lines = [f"{'policy':<14}" + "".join(f"{c:>12}" for c in cols)]
    for name, scores in rows.items():
        lines.append(f"{name:<14}" + "".join(f"{scores[c]:>12.3f}" if c in scores else f"{'':>12}" for c in cols))
    return "\n".join(lines)


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    sys.path.insert(0, os.path.dirname(os.path.abspath(cfg.labeler)))
    labeler = __import__(os.path.basename(cfg.labeler).removesuffix(".py"))  # (3) the hidden human of this dataset

    records = read_jsonl(os.path.join(cfg.data_dir, "prompts_eval.jsonl"), check_prompt,
                         hint="run python data/assistant/prepare.py")
    families = sorted({r["family"] for r in records})
    print(f"{len(records)} held-out prompts; greedy decoding, at most {cfg.max_new_tokens} new tokens")

    def summary(scores):
        by = {f: [s for s, r in zip(scores, records) if r["family"] == f] for f in families}
        return {**{f: sum(v) / len(v) for f, v in by.items()}, "all": sum(scores) / len(scores)}

    rows, results = {}, {"policies": {}, "settings": asdict(cfg)}
    rm, sft_ckpt = None, None
    if cfg.reward:
        rm, rm_ckpt = load_reward_model(cfg.reward)
        rm.to(rt.device)
        results["reward_model"] = {"val_accuracy": rm_ckpt["val_accuracy"],
                                   "length_baseline_accuracy": rm_ckpt["length_baseline_accuracy"]}
    for path in cfg.policies.split(","):
        ckpt = load_checkpoint(path, stages=LM_STAGES, hint="evaluate.py compares language models")
        name = ckpt["stage"]  # the row's name: the stage, or the run directory when two share a stage
        if name in rows:
            name = os.path.basename(os.path.dirname(os.path.abspath(common.ckpt_path(path))))
        while name in rows:
            name += "'"
        texts, finished = answer(ckpt, records, cfg, rt)
        scores = [labeler.score(r, t) for r, t in zip(records, texts)]
        rows[name] = summary(scores)
        if rm is not None:
            rm_score = rm_scores(rm, get_tokenizer(ckpt["tokenizer"]), records, texts, finished, rt)
            rows[name]["rm"] = sum(rm_score) / len(rm_score)
        if ckpt["stage"] == "sft":
            sft_ckpt = ckpt
        results["policies"][name] = {"checkpoint": path, "gold_score": rows[name]["all"], "n_prompts": len(records),
                                     "rm_score": rows[name].get("rm"),
                                     "families": {f: rows[name][f] for f in families},
                                     "examples": [{"prompt": r["messages"][-1]["content"], "answer": t}
                                                  for r, t in list(zip(records, texts))[:8]]}
    rows["ideal"] = summary([labeler.score(r, r["ideal"]) for r in records])
    print(table(rows, families))
    if rm is not None and sft_ckpt is not None:  # (4) fresh SFT samples: does the RM order them as the labeler does?
        k = cfg.rm_samples
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        many = [r for r in records for _ in range(k)]
        texts, finished = answer(sft_ckpt, many, cfg, rt, temperature=1.0, generator=g)
        gold = [labeler.score(r, t) for r, t in zip(many, texts)]
        proxy = rm_scores(rm, get_tokenizer(sft_ckpt["tokenizer"]), many, texts, finished, rt)
        within = [spearman(proxy[i:i + k], gold[i:i + k])
                  for i in range(0, len(many), k) if len(set(gold[i:i + k])) > 1]  # prompts whose samples differ
        stats = {"spearman_within_prompt": sum(within) / max(len(within), 1), "spearman_all": spearman(proxy, gold),
                 "best_of_n_gold": sum(gold[i + max(range(k), key=lambda j: proxy[i + j])]
                                       for i in range(0, len(many), k)) / len(records),
                 "sample_gold": sum(gold) / len(gold), "samples_per_prompt": k}
        results["reward_model"].update(stats)
        print(f"reward model: held-out pairwise accuracy {rm_ckpt['val_accuracy']:.3f} (longer-answer baseline "
              f"{rm_ckpt['length_baseline_accuracy']:.3f}). On {k} SFT samples (T=1) per prompt: Spearman(RM, gold) "
              f"{stats['spearman_within_prompt']:.3f} within a prompt (mean over {len(within)} prompts), "
              f"{stats['spearman_all']:.3f} across all; the RM's pick of the {k} scores {stats['best_of_n_gold']:.3f} "
              f"gold vs {stats['sample_gold']:.3f} for a random sample")
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
