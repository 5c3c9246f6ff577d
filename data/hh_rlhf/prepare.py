"""
Anthropic's HH-RLHF (Bai et al. 2022) as this project's files: the real-data recipe's SFT demonstrations, K=2
comparisons and prompts, for GPT-2 (gpt2 tokenizer).

    python data/hh_rlhf/prepare.py                                   # downloads helpful-base + harmless-base (~50 MB)
    python data/hh_rlhf/prepare.py --source=path/to/hh-rlhf          # a local copy of the HH repository
    python data/hh_rlhf/prepare.py --source=train.jsonl.gz,test.jsonl.gz --out_dir=data/my_hh

Each line of HH is {"chosen": transcript, "rejected": transcript}, a transcript being
"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ...\\n\\nAssistant: ...". Both transcripts share the conversation up
to their final assistant turn; the two final answers are what the labeler compared. So a record becomes
  - a comparison {"messages": shared conversation, "responses": [chosen answer, rejected answer], "ranks": [0, 1]},
  - a demonstration {"messages": shared conversation + chosen answer} (SFT imitates the preferred answers, as in
    the DPO paper's HH setup), and
  - a prompt {"messages": shared conversation, "family": "helpful" or "harmless"} for PPO and evaluation.
Files named train*.jsonl.gz feed prefs_train / sft_train / prompts_rl; test*.jsonl.gz feed prefs_val / sft_val /
prompts_eval. A record is dropped, and counted by reason, when its transcripts do not alternate Human / Assistant
starting with Human and ending with Assistant, have no assistant turn, have an empty turn, do not share the
conversation before the final answer, or end in identical answers. Nothing is written until every file has been
read, and then each file is written whole (temporary name, then rename): bad input never leaves half an output.
"""

import argparse
import glob
import gzip
import json
import os
import random
import re
import urllib.request
import zlib
from collections import Counter

URL = "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/{subset}/{split}.jsonl.gz"
SUBSETS = ("helpful-base", "harmless-base")
TURN = re.compile(r"\n\n(Human|Assistant):")  # the speaker marker that opens every turn of an HH transcript
ROLE = {"Human": "user", "Assistant": "assistant"}


class Dropped(Exception):
    """A record that is well-formed JSON but cannot become a comparison; its message is the reason."""


def parse_transcript(text):
    """An HH transcript -> messages [{"role": "user" | "assistant", "content"}], alternating, user first,
    assistant last. Raises Dropped with the reason otherwise."""
    parts = TURN.split(text)  # [text before the first marker, speaker, content, speaker, content, ...]
    speakers, contents = parts[1::2], [c.strip() for c in parts[2::2]]
    if "Assistant" not in speakers:
        raise Dropped("no assistant turn")
    if parts[0].strip() or speakers != ["Human", "Assistant"] * (len(speakers) // 2):
        raise Dropped("turns do not alternate Human / Assistant")
    if not all(contents):
        raise Dropped("empty turn")
    return [{"role": ROLE[s], "content": c} for s, c in zip(speakers, contents)]


def parse_record(record):
    """One HH record -> (prompt messages, chosen answer, rejected answer), or Dropped with the reason."""
    chosen, rejected = parse_transcript(record["chosen"]), parse_transcript(record["rejected"])
    if chosen[:-1] != rejected[:-1]:
        raise Dropped("chosen and rejected differ before the final answer")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise Dropped("identical answers")
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def read_records(path):
    """[(line number, record dict)] of a .jsonl.gz file; one sentence and exit on a file that is not one."""
    out = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{lineno}: not a JSON object ({e}); expected one "
                                     f'{{"chosen": ..., "rejected": ...}} record per line, as HH-RLHF has')
                if not (isinstance(record, dict) and isinstance(record.get("chosen"), str)
                        and isinstance(record.get("rejected"), str)):
                    raise SystemExit(f'{path}:{lineno}: expected {{"chosen": "<transcript>", "rejected": '
                                     f'"<transcript>"}}, got {str(record)[:80]!r}')
                out.append((lineno, record))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:  # truncated or not gzip at all
        raise SystemExit(f"{path} is not a readable .jsonl.gz ({type(e).__name__}: {e}); download it again "
                         f"(delete it and rerun) or pass another copy with --source=")
    return out


def find_sources(source, subsets, raw_dir):
    """[(path, split, family)] from --source (comma-separated files or directories), or the downloaded subsets.
    A directory laid out like the HH repository gives <subset>/train.jsonl.gz and <subset>/test.jsonl.gz of each
    wanted subset (its other files, red-team-attempts say, are not comparisons); any other directory gives the
    train*.jsonl.gz and test*.jsonl.gz files directly in it."""
    if not source:
        return [(download(subset, split, raw_dir), split, subset.split("-")[0])
                for subset in subsets for split in ("train", "test")]
    files = []
    for p in source.split(","):
        if os.path.isdir(p):
            found = [f for s in subsets for f in (os.path.join(p, s, "train.jsonl.gz"),
                                                  os.path.join(p, s, "test.jsonl.gz")) if os.path.exists(f)]
            found = found or sorted(glob.glob(os.path.join(p, "train*.jsonl.gz")) +
                                    glob.glob(os.path.join(p, "test*.jsonl.gz")))
            if not found:
                raise SystemExit(f"{p} holds neither <subset>/train.jsonl.gz for --subsets={','.join(subsets)} nor "
                                 f"train*.jsonl.gz / test*.jsonl.gz files")
            files += found
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise SystemExit(f"--source: {p} is neither a file nor a directory")
    out = []
    for f in files:
        split = next((s for s in ("train", "test") if os.path.basename(f).startswith(s)), None)
        if split is None:
            raise SystemExit(f"{f}: cannot tell its split; name HH files train*.jsonl.gz or test*.jsonl.gz")
        parent = os.path.basename(os.path.dirname(os.path.abspath(f)))
        out.append((f, split, parent.split("-")[0] if parent in subsets else "hh"))  # helpful-base -> helpful
    for split in ("train", "test"):
        if not any(s == split for _, s, _ in out):
            raise SystemExit(f"--source has no {split}*.jsonl.gz file; both HH splits are needed (train for "
                             f"training, test for validation and evaluation)")
    return out


def download(subset, split, raw_dir):
    """data/hh_rlhf/raw/<subset>/<split>.jsonl.gz, fetched once (to a temporary name, renamed when complete)."""
    path = os.path.join(raw_dir, subset, f"{split}.jsonl.gz")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    url = URL.format(subset=subset, split=split)
    print(f"downloading {url}")
    try:
        urllib.request.urlretrieve(url, path + ".tmp")
    except OSError as e:
        raise SystemExit(f"could not download {url} ({e}); --source= takes a local copy (a directory of HH's "
                         f".jsonl.gz files, or the files themselves)")
    os.replace(path + ".tmp", path)
    return path


def convert(sources):
    """Every record of every source -> the six output lists, and the drop counts per split."""
    out = {name: [] for name in ("sft_train", "sft_val", "prefs_train", "prefs_val", "prompts_rl", "prompts_eval")}
    seen = {"train": set(), "test": set()}  # prompts go in once, however many comparisons share them
    stats = {"train": Counter(), "test": Counter()}
    first = {}  # (split, reason) -> "file:line" of its first occurrence
    for path, split, family in sources:
        sft, prefs, prompts = ("sft_train", "prefs_train", "prompts_rl") if split == "train" else \
            ("sft_val", "prefs_val", "prompts_eval")
        for lineno, record in read_records(path):
            stats[split]["read"] += 1
            try:
                prompt, chosen, rejected = parse_record(record)
            except Dropped as e:
                stats[split][str(e)] += 1
                first.setdefault((split, str(e)), f"{path}:{lineno}")
                continue
            stats[split]["kept"] += 1
            out[sft].append({"messages": prompt + [{"role": "assistant", "content": chosen}]})
            out[prefs].append({"messages": prompt, "responses": [chosen, rejected], "ranks": [0, 1]})
            key = json.dumps(prompt)
            if key not in seen[split]:
                seen[split].add(key)
                out[prompts].append({"messages": prompt, "family": family})
    return out, stats, first


def write_all(out_dir, out, meta):
    os.makedirs(out_dir, exist_ok=True)
    for name, records in out.items():
        with open(os.path.join(out_dir, f"{name}.jsonl.tmp"), "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=2)
    for name in list(out) + ["meta"]:
        ext = "json" if name == "meta" else "jsonl"
        os.replace(os.path.join(out_dir, f"{name}.{ext}.tmp"), os.path.join(out_dir, f"{name}.{ext}"))


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Turn Anthropic's HH-RLHF into demonstrations, comparisons, prompts.")
    parser.add_argument("--source", default="", help="comma-separated .jsonl.gz files or directories of them "
                        "(default: download helpful-base and harmless-base into data/hh_rlhf/raw)")
    parser.add_argument("--subsets", default=",".join(SUBSETS), help="HH subsets to use (others: helpful-online, "
                        "helpful-rejection-sampled)")
    parser.add_argument("--out_dir", default=here)
    args = parser.parse_args()

    sources = find_sources(args.source, args.subsets.split(","), os.path.join(here, "raw"))
    out, stats, first = convert(sources)
    # helpful-base's prompts come before harmless-base's: in random order (seed 0), the first N are a sample of both
    # (reward.py sets the RM's unit on the first RL prompts)
    random.Random(0).shuffle(out["prompts_rl"])
    for split, c in stats.items():
        drops = [(k, v) for k, v in c.items() if k not in ("read", "kept")]
        print(f"{split}: {c['read']} records read, {c['kept']} kept, {c['read'] - c['kept']} dropped"
              + "".join(f"\n  dropped {v}: {k} (first at {first[(split, k)]})" for k, v in sorted(drops)))
    if not out["prefs_train"] or not out["prefs_val"]:
        raise SystemExit("no usable comparisons in the train or test split; nothing written")
    meta = {"tokenizer": "gpt2", "vocab_size": 50304, "sources": [p for p, _, _ in sources],
            "counts": {k: len(v) for k, v in out.items()},
            "dropped": {s: {k: v for k, v in c.items() if k not in ("read", "kept")} for s, c in stats.items()}}
    write_all(args.out_dir, out, meta)
    print(f"wrote {', '.join(f'{k}.jsonl ({len(v)})' for k, v in out.items())} and meta.json to {args.out_dir}")
