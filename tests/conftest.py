import contextlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
import traceback
import warnings

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, ROOT)
torch.set_num_threads(2)

# the flags that make every stage tiny: a few seconds per command on a CPU
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32"]


def run(*args, check=True, stdin=None):
    """Run a repo script (a .py path from the repo root) as a user would (python script.py --flag=value ...), and
    return what subprocess.run would: returncode, stdout, stderr.

    A script runs in this process, as __main__ through runpy, exactly the file `python script.py` would run: a new
    interpreter would spend ~3 s importing torch each time, most of the suite's time. What a script changes in the
    process (argv, stdin, sys.path, the working directory) is put back afterwards; an exit status or an uncaught
    exception becomes the returncode, its message, traceback or warnings stderr, as from a real process. Modules a
    script imports stay loaded, so the scripts load what depends on a path or the environment accordingly
    (common.load_labeler by path, tokenizer.get_tokenizer per GPT2_TIKTOKEN)."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    saved = sys.argv, sys.stdin, list(sys.path), os.getcwd()
    script = os.path.join(ROOT, args[0])
    sys.argv, sys.stdin = [script, *args[1:]], io.StringIO(stdin or "")
    sys.path.insert(0, os.path.dirname(script))  # as python does for a script
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")  # a script's warnings go to its stderr, as from a process
            warnings.showwarning = lambda m, c, f, n, file=None, line=None: print(
                warnings.formatwarning(m, c, f, n, line), end="", file=sys.stderr)
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):  # sys.exit(), sys.exit(2)
                    code = (e.code or 0) % 256
                else:  # raise SystemExit("message"): python prints the message and exits 1
                    code = 1
                    print(e.code, file=sys.stderr)
            except Exception:
                code = 1
                traceback.print_exc()
    finally:
        sys.argv, sys.stdin, sys.path[:] = saved[:3]
        os.chdir(saved[3])
    proc = subprocess.CompletedProcess([sys.executable, *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read(path):
    return [json.loads(line) for line in open(path)]


def lines_that_fit(path, n, block_size=160):
    """The first n lines of a demonstrations file whose conversation fits a context of block_size (tiny_pt's): the
    ones sft.py trains on, so that a test knows its number of steps."""
    from tokenizer import get_tokenizer
    fits = lambda line: len(get_tokenizer("bytes").render_conversation(json.loads(line)["messages"])[0]) <= block_size
    return "".join([line for line in open(path) if fits(line)][:n])


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
