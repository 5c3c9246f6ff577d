"""
A pretraining corpus that needs no network: the Python standard library's own .py sources on this machine.

    python data/pycode/prepare.py                       # -> data/pycode/{train.bin, val.bin, meta.json}
    python data/pycode/prepare.py --source=DIR --out_dir=DIR

Every .py file under the standard library (site-packages and test directories excluded) is one document; documents
are joined by <|endoftext|>. The split is by file (about 1 in 20 files to val, chosen by a hash of the relative
path), so val measures code the model has not seen, not other windows of the same files. Tokens are the bytes of
the UTF-8 text (the `bytes` tokenizer), stored as uint16. On CPython 3.11 that is ~730 files, ~12M tokens, in seconds.
"""

import argparse
import hashlib
import json
import os
import sys
import sysconfig

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from tokenizer import get_tokenizer  # noqa: E402

SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def source_files(root):
    """Sorted relative paths of the .py files under root, outside site-packages and test directories."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames if f.endswith(".py")]
    return sorted(found)


def is_val(relpath):
    return hashlib.sha256(relpath.encode()).digest()[0] < 256 // 20


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Write the Python standard library as bytes tokens.")
    parser.add_argument("--source", default=sysconfig.get_paths()["stdlib"], help="directory of .py files")
    parser.add_argument("--out_dir", default=here, help="where train.bin, val.bin and meta.json go")
    args = parser.parse_args()

    tok = get_tokenizer("bytes")
    files = source_files(args.source)
    if not files:
        raise SystemExit(f"no .py files under {args.source}; pass --source=DIR with Python sources in it")
    splits = {"train": [], "val": []}
    for rel in files:
        with open(os.path.join(args.source, rel), encoding="utf-8", errors="replace") as f:
            ids = tok.encode(f.read())
        splits["val" if is_val(rel) else "train"].append(np.array(ids + [tok.eot_id], dtype=np.uint16))
    if not splits["val"]:  # a tiny source directory: still hold out one file
        splits["val"].append(splits["train"].pop())
    os.makedirs(args.out_dir, exist_ok=True)
    counts = {}
    for split, docs in splits.items():
        arr = np.concatenate(docs)
        tmp = os.path.join(args.out_dir, f"{split}.bin.tmp")
        arr.tofile(tmp)
        os.replace(tmp, os.path.join(args.out_dir, f"{split}.bin"))
        counts[split] = {"files": len(docs), "tokens": int(arr.size)}
    meta = {"tokenizer": "bytes", "vocab_size": tok.vocab_size, "source": args.source, **counts}
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{counts['train']['files']} train files ({counts['train']['tokens']:,} tokens), "
          f"{counts['val']['files']} val files ({counts['val']['tokens']:,} tokens) -> {args.out_dir}")


if __name__ == "__main__":
    main()
