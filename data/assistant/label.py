"""
The labeling step: the hidden human ranks sampled answers (the SFT model's, and a few of another model's), turning them
into comparisons.

    python sample.py --ckpt=out/sft --prompts=data/assistant/prompts_label.jsonl --num_samples=8 --temperature=0.7 \
        --max_new_tokens=64 --out=out/samples.jsonl
    python sample.py --ckpt=out/pretrain --few_shot=3 --prompts=data/assistant/prompts_label.jsonl \
        --num_samples=1 --temperature=1 --max_new_tokens=64 --out=out/samples_gpt.jsonl
    python data/assistant/label.py --samples=out/samples.jsonl,out/samples_gpt.jsonl   # -> prefs_{train,val}.jsonl

As InstructGPT collected its comparisons: K answers per prompt from several models (run.sh: 8 sampled from the SFT
model and 1 from the few-shot prompted pretrained model, K = 9; the paper used 4 to 9), ranked by a labeler
(labeler.rank). The files given to --samples answer the same prompts file, line for line; each prompt's answers are
all of theirs, in order, and "sources" says which file each came from.

Sampled at temperature 0.7, the SFT model writes each preference axis's good form some of the time (less often
than its demonstrators did), so most prompts' K answers contrast the mediocre and the good form of their axis: the
contrast the reward model learns the axis from. Not at 1: there this 0.85M model garbles a word in about one answer
in 25 (a third as often at 0.7), a garbled whole answer to a two-part question ranks below a clean half one,
and a reward model that cannot check a fact learns that answering both parts is a risk (docs/experiments.md,
"Labeling at temperature 0.7"); Llama 2 also varied the temperature of the answers it had compared.

Some contrasts the SFT model rarely or never offers: it refuses every harmful request, so without another model the
reward model never sees harmful help; and it pads most right answers, so on arithmetic, where its answers are mostly
wrong, plain right ones are rare. The prompted pretrained model complies with every harmful request and seldom pads
(evaluate.py's gpt_prompted row).

An answer sampled twice for a prompt is kept once (a labeler ranks distinct answers, and the SFT model often repeats
its likeliest ones). Answers the labeler scores the same are ties and make no pair. Training comparisons carry the
labeler's disagreement noise (--noise); the validation split is always ranked without noise, so held-out accuracy is
measured against the labeler's true preference. Prompts whose answers all tie teach nothing and are left out
(counted).

Refiled in a conversation: each training comparison of a one-turn prompt (no "it" to resolve) is filed a second time
as the last turn of a labeling conversation of 3-5 turns under the same system message (its earlier exchanges, cut as
prepare.py cuts), the same answers ranked again. The labeler's judgement of an answer to the last message does not
depend on what came before; the reward model's does until it sees the same contrast in both contexts: trained on
one-turn comparisons and the few later turns of each family, it ranked half answers and refusals of harmless requests
near chance on turns 3-5 (docs/experiments.md, conversations v13). The validation split is not refiled.
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labeler  # noqa: E402
from prepare import cut  # noqa: E402


def refile(rows, prompts, rng, noise):
    """Each one-turn comparison again, after the earlier exchanges of a conversation of prompts (turn >= 3) under the
    same system message, cut as prepare.py cuts (prepare.cut); ranked anew (what an answer says about the
    last message is judged as before)."""
    system = lambda msgs: msgs[0]["content"] if msgs[0]["role"] == "system" else None
    histories = {}  # system message (or None) -> the earlier exchanges of its conversations
    for p in prompts:
        if p.get("turn", 1) >= 3:
            msgs = p["messages"]
            histories.setdefault(system(msgs), []).append(msgs[1 if system(msgs) else 0:-1])
    out = []
    for r in rows:
        pool = histories.get(system(r["messages"]))
        if r.get("turn", 1) != 1 or not pool:
            continue
        msgs = cut(r["messages"][:-1], list(rng.choice(pool)), r["messages"][-1:])  # the head: the system message
        ranks = labeler.rank({**r, "messages": msgs}, r["responses"], noise=noise, rng=rng)
        if len(set(ranks)) > 1:
            out.append({**r, "messages": msgs, "turn": sum(m["role"] == "user" for m in msgs), "ranks": ranks,
                        "refiled": True})
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Rank sampled answers into comparisons.")
    parser.add_argument("--samples", default="out/samples.jsonl",
                        help="sample.py --prompts outputs for the same prompts, comma-separated")
    parser.add_argument("--out_dir", default=here, help="where prefs_train.jsonl and prefs_val.jsonl go")
    parser.add_argument("--noise", type=float, default=0.1, help="labeler disagreement on the training split")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    files = args.samples.split(",")
    for path in files:
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: sample answers first (python sample.py --ckpt=out/sft "
                             f"--prompts=data/assistant/prompts_label.jsonl --num_samples=8 --temperature=1 "
                             f"--out={path})")
    answers = []  # per file, its records
    for path in files:
        with open(path) as f:
            answers.append([])
            for lineno, line in enumerate(f, 1):
                try:
                    r = json.loads(line)
                    r["responses"], r["finished"], r["messages"]
                except (ValueError, KeyError) as e:
                    raise SystemExit(f"{path}:{lineno}: expected a sample.py --prompts record with "
                                     f'"responses" and "finished" ({e})')
                first = answers[0][lineno - 1] if len(answers) > 1 and lineno <= len(answers[0]) else r
                if r["messages"] != first["messages"]:
                    raise SystemExit(f"{path}:{lineno}: not the prompt of {files[0]}:{lineno}: the files must "
                                     f"answer the same prompts file, line for line")
                answers[-1].append(r)
        if len(answers[-1]) != len(answers[0]):
            raise SystemExit(f"{path} has {len(answers[-1])} records, {files[0]} {len(answers[0])}: the files must "
                             f"answer the same prompts file, line for line")
    rng = random.Random(args.seed)
    splits, all_tied = {"train": [], "val": []}, 0
    gold = {}
    for path, recs in zip(files, answers):  # every answer judged once here, so bad input stops at its file:line
        gold[path] = []
        for lineno, r in enumerate(recs, 1):
            try:
                gold[path] += [labeler.score(r, y) for y in r["responses"]]
            except ValueError as e:
                raise SystemExit(f"{path}:{lineno}: {e}")
    for records in zip(*answers):  # one prompt: its answers from every file, in order
        r = {**records[0], "sources": [path for path, q in zip(files, records) for _ in q["responses"]]}
        for key in ("responses", "finished", "response_ids"):
            if all(key in q for q in records):
                r[key] = [y for q in records for y in q[key]]
            else:
                r.pop(key, None)
        # a labeler shown the same answer twice ranks it once: only each distinct answer's first copy is kept (the
        # sampled tokens decide where there are any), so repeats cost the RM no forward pass
        seen, keep = set(), []
        for i, y in enumerate(r.get("response_ids", r["responses"])):
            if (y := json.dumps(y)) not in seen:
                seen.add(y)
                keep.append(i)
        for key in ("responses", "finished", "response_ids", "sources"):
            if key in r:
                r[key] = [r[key][i] for i in keep]
        split = "val" if rng.random() < args.val_fraction else "train"
        ranks = labeler.rank(r, r["responses"], noise=args.noise if split == "train" else 0.0, rng=rng)
        if len(set(ranks)) < 2:
            all_tied += 1
            continue
        splits[split].append({**r, "ranks": ranks})
    refiled = refile(splits["train"], [recs[0] for recs in zip(*answers)], rng, args.noise)
    splits["train"] += refiled
    os.makedirs(args.out_dir, exist_ok=True)
    for split, rows in splits.items():
        path = os.path.join(args.out_dir, f"prefs_{split}.jsonl")
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(path + ".tmp", path)
    pairs = sum(len(r["ranks"]) * (len(r["ranks"]) - 1) // 2 for r in splits["train"])
    print(f"comparisons: {len(splits['train'])} train / {len(splits['val'])} val prompts "
          f"(<= {pairs} training pairs; {len(refiled)} of the training prompts refiled in a conversation; {all_tied} "
          f"prompts dropped, all answers tied) -> {args.out_dir}")
    print("labeler's mean score of the answers: " + ", ".join(f"{sum(v) / len(v):.3f} from {p} ({len(v)})"
                                                               for p, v in gold.items()))


if __name__ == "__main__":
    main()
