import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, ROOT)
torch.set_num_threads(2)

# the flags that make every stage tiny: a few seconds per command on a CPU
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32"]


def run(*args, check=True, stdin=None):
    """Run a repo script as a user would (python script.py --flag=value ...) from the repo root."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, input=stdin,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """data/assistant/prepare.py's files, written once per test session."""
    out = tmp_path_factory.mktemp("assistant")
    run("data/assistant/prepare.py", f"--out_dir={out}")
    return out


@pytest.fixture(scope="session")
def tiny_pt(world, tmp_path_factory):
    """A tiny language model pretrained for 4 steps on the world's prose (context 160): what the stages start from.
    Shared by the tests, which only read it."""
    out = tmp_path_factory.mktemp("tiny_pt")
    run("pretrain.py", f"--data_dir={world}", *TINY_MODEL, "--block_size=160", "--batch_size=4", "--max_iters=4",
        "--eval_iters=1", "--eval_interval=4", f"--out_dir={out}")
    return out


@pytest.fixture(scope="session")
def pycode(tmp_path_factory):
    """data/pycode/prepare.py run on a handful of standard-library modules (the real script, a smaller source)."""
    src = tmp_path_factory.mktemp("src")
    stdlib = sysconfig.get_paths()["stdlib"]
    for name in ("textwrap.py", "bisect.py", "heapq.py", "string.py", "fnmatch.py", "colorsys.py", "json"):
        p = os.path.join(stdlib, name)
        (shutil.copytree if os.path.isdir(p) else shutil.copy)(p, src / name)
    out = tmp_path_factory.mktemp("pycode")
    run("data/pycode/prepare.py", f"--source={src}", f"--out_dir={out}")
    return str(out)
