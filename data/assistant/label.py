"""
The labeling step: the hidden human ranks the SFT model's answers, turning samples into comparisons.

    python sample.py --ckpt=out/sft --prompts=data/assistant/prompts_label.jsonl --num_samples=6 --temperature=1 \
        --max_new_tokens=64 --out=out/samples.jsonl
    python data/assistant/label.py --samples=out/samples.jsonl     # -> data/assistant/prefs_{train,val}.jsonl

As InstructGPT collected its comparisons: K answers per prompt sampled from the SFT model (run.sh takes K = 6; the
paper used 4 to 9), ranked by a labeler (labeler.rank). Sampled at temperature 1, the SFT model writes each
preference axis's good form some of the time (less often than its demonstrators did: 18% honest answers against their
40% on world v2's first seed-0 run), so most prompts' K answers contrast the mediocre and the good form of their axis:
the contrast the reward model learns the axis from. Equal answers, or answers the labeler scores the same, are ties and
make no pair. Training comparisons carry the labeler's disagreement noise (--noise); the validation split is always
ranked without noise, so held-out accuracy is measured against the labeler's true preference. Prompts whose answers
all tie teach nothing and are left out (counted).
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import labeler  # noqa: E402


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Rank sampled answers into comparisons.")
    parser.add_argument("--samples", default="out/samples.jsonl", help="sample.py --prompts output")
    parser.add_argument("--out_dir", default=here, help="where prefs_train.jsonl and prefs_val.jsonl go")
    parser.add_argument("--noise", type=float, default=0.1, help="labeler disagreement on the training split")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not os.path.exists(args.samples):
        raise SystemExit(f"{args.samples} not found: sample answers first (python sample.py --ckpt=out/sft "
                         f"--prompts=data/assistant/prompts_label.jsonl --num_samples=6 --temperature=1 "
                         f"--out={args.samples})")
    rng = random.Random(args.seed)
    splits, all_tied = {"train": [], "val": []}, 0
    with open(args.samples) as f:
        for lineno, line in enumerate(f, 1):
            try:
                r = json.loads(line)
                responses = r["responses"]
            except (ValueError, KeyError) as e:
                raise SystemExit(f"{args.samples}:{lineno}: expected a sample.py --prompts record with "
                                 f'"responses" ({e})')
            split = "val" if rng.random() < args.val_fraction else "train"
            ranks = labeler.rank(r, responses, noise=args.noise if split == "train" else 0.0, rng=rng)
            if len(set(ranks)) < 2:
                all_tied += 1
                continue
            splits[split].append({**r, "ranks": ranks})
    os.makedirs(args.out_dir, exist_ok=True)
    for split, rows in splits.items():
        path = os.path.join(args.out_dir, f"prefs_{split}.jsonl")
        with open(path + ".tmp", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(path + ".tmp", path)
    pairs = sum(len(r["ranks"]) * (len(r["ranks"]) - 1) // 2 for r in splits["train"])
    print(f"comparisons: {len(splits['train'])} train / {len(splits['val'])} val prompts "
          f"(<= {pairs} training pairs; {all_tied} prompts dropped, all answers tied) -> {args.out_dir}")


if __name__ == "__main__":
    main()
