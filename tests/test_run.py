"""run.sh --tiny: the whole pipeline, every stage through its real script, on a tiny model."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from common import question_alone
from conftest import ROOT


def test_run_sh_tiny_full_runs_every_stage_and_both_rounds_to_the_table(tmp_path):
    """--full: the default pipeline, then SFT on ideal demonstrations, rejection-sampling fine-tuning, PPO-ptx and a
    second round of comparisons (of the round-1 PPO policy's answers), an RM on both rounds and PPO on it, all in
    one results.json. --frontier (one beta per method here, to stay fast): the sweep's runs, frontier.py's
    frontier.json with every point, fit and matched value it promises, and frontier.png."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "run.sh", "--tiny", "--seed=3", "--full", "--frontier", "--betas=0",
                           "--dpo_betas=0.1"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("prepare", "pretrain", "sft", "label", "reward", "ppo", "distill", "rloo", "grpo", "dpo", "sft_good",
                  "rft", "ppo_ptx", "grpo_verifier", "ppo_rm_verifier", "round 2 comparisons and RM", "ppo_r2",
                  "evaluate",
                  "frontier's 6 trainings",
                  "frontier's measurements", "plot"):
        assert f"-- {stage} took" in proc.stdout
    assert len(os.listdir(tmp_path / "plots")) == 7  # every figure plot.py draws: the tiny run has every stage
    # --frontier: ppo, grpo and rloo at beta 0 and dpo at 0.1 against the RM; RMs on 1/4 and 1/2 of the
    # comparisons, the same held-out ones, and PPO against each
    f = tmp_path / "frontier"
    runs = ["ppo_b0", "grpo_b0", "rloo_b0", "dpo_b0.1", "ppo_q4", "ppo_q2"]
    for run in runs + ["reward_q4", "reward_q2"]:
        assert (f / run / "ckpt.pt").exists(), run
    assert {torch.load(f / r / "ckpt.pt", weights_only=False)["config"]["beta"] for r in runs[:3]} == {0.0}
    n = sum(1 for _ in open(tmp_path / "data" / "prefs_train.jsonl"))
    for part in (4, 2):
        rm = torch.load(f / f"reward_q{part}" / "ckpt.pt", weights_only=False)
        assert rm["train_comparisons"] == n // part and rm["config"]["data_dir"] == str(f / f"data_q{part}")
        val = open(tmp_path / "data" / "prefs_val.jsonl").read()
        assert open(f / f"data_q{part}" / "prefs_val.jsonl").read() == val
        assert torch.load(f / f"ppo_q{part}" / "ckpt.pt", weights_only=False)["reward"] == str(f / f"reward_q{part}")
    fr = json.load(open(f / "frontier.json"))
    methods = {"ppo", "grpo", "rloo", "dpo", "ppo@reward_q4", "ppo@reward_q2", "best_of_n", "best_of_n@reward_q4",
               "best_of_n@reward_q2"}
    assert {p["method"] for p in fr["points"]} == methods
    assert {p["run"] for p in fr["points"] if "run" in p} == {str(f / r) for r in runs}
    bon = [p for p in fr["points"] if p["method"] == "best_of_n"]
    assert [p["n"] for p in bon] == [1, 2] and bon[1]["kl"] == pytest.approx(math.log(2) - 0.5)
    assert all(p["kl_is_upper_bound"] for p in bon) and all(-1 <= p["gain"]["mean"] <= 1 for p in bon[1:])
    assert set(fr["fits"]) == methods  # one point past the origin each here: too few to fit, so None
    assert {(r["kl"], r["method"]) for r in fr["matched"]} == {(k, m) for k in (0.5, 1.0) for m in methods}
    assert [r["reward_model"] for r in fr["rm_data"]] == [str(tmp_path / "reward")] + \
        [str(f / f"reward_q{p}") for p in (4, 2)]
    assert [r["comparisons"] for r in fr["rm_data"]] == [n, n // 4, n // 2]
    assert len(os.listdir(f / "points")) == 1 + len(runs) + 1  # sft, each run's one snapshot, best-of-n: cached
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert set(res["policies"]) == {"gpt", "gpt_prompted", "sft", "sft_rewrite", "ppo", "distill", "rloo", "grpo",
                                    "dpo", "best_of_2", "sft_good", "rft", "ppo_ptx", "grpo_verifier",
                                    "ppo_rm_verifier", "ppo_r2"}
    # sft_good: the pretrained model on the ideal demonstrations; rft: SFT continued on the RM's picks of 8
    good, rft = (torch.load(tmp_path / d / "ckpt.pt", weights_only=False) for d in ("sft_good", "rft"))
    assert good["config"]["data_dir"] == str(tmp_path / "data" / "good") and good["parent"] == str(tmp_path / "pretrain")
    assert rft["parent"] == str(tmp_path / "sft")
    # distill: the PPO policy's answers alone, after each conversation and alone, then sft.py from ppo on them
    distilled = torch.load(tmp_path / "distill" / "ckpt.pt", weights_only=False)
    assert distilled["parent"] == str(tmp_path / "ppo")
    assert distilled["config"]["data_dir"] == str(tmp_path / "distill_data")
    targets = [(json.dumps(r["messages"]), r["responses"][0])
               for r in map(json.loads, open(tmp_path / "distill_data" / "sft_train.jsonl"))]
    convs = [(json.loads(m), a) for m, a in targets if m.count('"role": "user"') >= 2]
    alone = [(json.dumps(question_alone(msgs)), a) for msgs, a in convs]
    assert convs and set(alone) <= set(targets) and len(targets) == 2 * len(convs)  # each answer alone too
    later = {json.dumps(r["messages"][-1:]) for r in map(json.loads, open(tmp_path / "data" / "prompts_later.jsonl"))
             if r["messages"][0]["role"] != "system"}
    assert not later & {m for m, _ in alone}  # no question the evaluation asks alone is taught
    picks = [json.loads(line) for line in open(tmp_path / "rft_data" / "sft_train.jsonl")]
    n_label = sum(1 for _ in open(tmp_path / "data" / "prompts_label.jsonl"))  # one pick per labeling prompt
    assert len(picks) == n_label == 800 and all(len(r["responses"]) == 1 and len(r["rm_scores"]) == 1 for r in picks)
    # evaluate.py (18): every RL, DPO and best-of-N row against ppo, paired on the prompts
    assert {c["a"] for c in res["paired"] if c["b"] == "ppo"} == {"rloo", "grpo", "dpo", "best_of_2", "ppo_ptx",
                                                                  "grpo_verifier", "ppo_rm_verifier", "ppo_r2",
                                                                  "sft_good", "rft", "distill"}
    # round 2 ranks the round-1 PPO policy's answers: sample.py gives the same answers again from ppo, not from sft
    data, r2 = tmp_path / "data", tmp_path / "samples_r2.jsonl"
    rows = [json.loads(line) for line in open(data / "round2" / "prefs_train.jsonl")]
    assert rows and all(set(r["sources"]) == {str(r2)} and len(r["responses"]) == 9 for r in rows)
    for ckpt, same in (("ppo", True), ("sft", False)):
        again = tmp_path / f"again_{ckpt}.jsonl"
        subprocess.run([sys.executable, "sample.py", f"--ckpt={tmp_path / ckpt}", f"--prompts={data}/prompts_label.jsonl",
                        "--num_samples=9", "--temperature=1", "--max_new_tokens=8", "--seed=3", f"--out={again}"],
                       cwd=ROOT, check=True, capture_output=True)
        assert (open(again).read() == open(r2).read()) == same, ckpt
    # the round-2 RM learned from both rounds' comparisons, and the table has both RMs' report cards
    both = open(data / "rounds_1_2" / "prefs_train.jsonl").read()
    assert both == open(data / "prefs_train.jsonl").read() + open(data / "round2" / "prefs_train.jsonl").read()
    rm2 = torch.load(tmp_path / "reward_r2" / "ckpt.pt", weights_only=False)
    assert rm2["config"]["data_dir"] == str(data / "rounds_1_2")
    assert set(res["reward_models"]) == {str(tmp_path / "reward"), str(tmp_path / "reward_r2")}
    for card in res["reward_models"].values():  # each RM's accuracy on round 2's held-out comparisons
        assert set(card["prefs_accuracy"]) == {str(data / "round2" / "prefs_val.jsonl")}
    ptx = torch.load(tmp_path / "ppo_ptx" / "ckpt.pt", weights_only=False)
    assert ptx["config"]["ptx_coef"] > 0 and res["alignment_tax"]["ppo_ptx"]["corpus_val_loss"] > 0
    assert res["policies"]["sft"]["win_rate_vs_sft"] == 0.5
    assert not os.path.exists(os.path.join(ROOT, "out", "tiny"))  # $OUT was honoured: nothing written elsewhere
    # --seed=3 is the world's seed and every stage's
    assert json.load(open(tmp_path / "data" / "meta.json"))["seed"] == 3 and res["settings"]["seed"] == 3
    for stage in ("pretrain", "sft", "reward", "ppo", "ppo_ptx", "dpo", "rloo", "grpo", "reward_r2", "ppo_r2",
                  "sft_good", "rft", "grpo_verifier", "ppo_rm_verifier", "distill"):
        assert torch.load(tmp_path / stage / "ckpt.pt", weights_only=False)["config"]["seed"] == 3, stage


def test_run_sh_refuses_a_seed_that_is_not_an_integer_and_writes_nothing(tmp_path):
    for bad in ("--seed=x", "--seed=1.5", "--seed=", "--sede=1"):
        proc = subprocess.run(["bash", "run.sh", bad, "--tiny"], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "run.sh: " in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists() and proc.stdout == ""


@pytest.mark.parametrize("bad", ["--betas=", "--betas=a,b", "--betas=0.1,-1", "--dpo_betas=0", "--dpo_betas=0.1,0.0",
                                 "--dpo_betas=1,,2"])
def test_run_sh_refuses_a_frontier_list_that_is_empty_or_not_numbers_and_starts_nothing(tmp_path, bad):
    proc = subprocess.run(["bash", "run.sh", "--frontier", bad, "--tiny"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and bad.split("=")[0] in proc.stderr, proc.stderr
    assert "nothing was written" in proc.stderr and not (tmp_path / "out").exists() and proc.stdout == ""
