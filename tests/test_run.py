"""run.sh --tiny: the whole pipeline, every stage through its real script, on a tiny model."""
import json
import os
import subprocess
import sys

import torch

from conftest import ROOT


def test_run_sh_tiny_runs_every_stage_to_the_table(tmp_path):
    proc = subprocess.run(["bash", "run.sh", "--tiny", "--seed=3"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("prepare", "pretrain", "sft", "label", "reward", "ppo", "rloo", "grpo", "dpo", "evaluate", "plot"):
        assert f"-- {stage} took" in proc.stdout
    assert len(os.listdir(tmp_path / "plots")) == 6  # every figure plot.py draws: the tiny run has every stage
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert set(res["policies"]) == {"gpt", "gpt_prompted", "sft", "ppo", "rloo", "grpo", "dpo", "best_of_2"}
    assert res["policies"]["sft"]["win_rate_vs_sft"] == 0.5
    assert not os.path.exists(os.path.join(ROOT, "out", "tiny"))  # $OUT was honoured: nothing written elsewhere
    # --seed=3 is the world's seed and every stage's
    assert json.load(open(tmp_path / "data" / "meta.json"))["seed"] == 3 and res["settings"]["seed"] == 3
    for stage in ("pretrain", "sft", "reward", "ppo", "rloo", "grpo", "dpo"):
        assert torch.load(tmp_path / stage / "ckpt.pt", weights_only=False)["config"]["seed"] == 3, stage


def test_run_sh_refuses_a_seed_that_is_not_an_integer_and_writes_nothing(tmp_path):
    for bad in ("--seed=x", "--seed=1.5", "--seed=", "--sede=1"):
        proc = subprocess.run(["bash", "run.sh", bad, "--tiny"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "run.sh: " in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists() and proc.stdout == ""
