"""evaluate.py with every row of the table on tiny checkpoints: names, win rates, KL, the over-optimisation table."""
import json
import math
import sys
import types

import pytest
import torch

from conftest import read, run
from common import load_labeler, save_checkpoint
from evaluate import first_demonstrations, prose, win_rate
from test_ppo import tiny_checkpoints


def test_win_rate_counts_ties_half_with_an_interval():
    assert win_rate([1, 1], [1, 1]) == (0.5, [0.5, 0.5])
    m, (lo, hi) = win_rate([1, 0, 0.5, 0.2], [0, 1, 0.5, 0.1])  # win, loss, tie, win
    assert m == 0.625 and lo < m < hi and 0 <= lo and hi <= 1


def test_few_shot_demonstrations_are_prose_without_chat_tokens(world):
    demos = first_demonstrations(world / "sft_train.jsonl", 3)
    assert len({d["family"] for d in demos}) == 3
    text = prose(demos[0]["messages"])
    assert text.startswith('Mia asked Tom, "') and 'Tom said, "' in text and "<|" not in text


def test_evaluate_writes_every_row_and_sft_against_itself_is_one_half(world, tmp_path):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    ckpt = torch.load(sft / "ckpt.pt", weights_only=False)
    save_checkpoint(tmp_path / "pt", {**ckpt, "stage": "pretrain"})  # a base model: answers the bare prompt
    ppo = tmp_path / "ppo"
    run("ppo.py", f"--data_dir={world}", f"--init_from={sft}", f"--reward={rm}", f"--out_dir={ppo}",
        "--max_iters=2", "--ckpt_interval=1", "--batch_size=8", "--minibatch_size=8", "--max_new_tokens=8",
        "--learning_rate=3e-3")
    out = tmp_path / "eval"
    proc = run("evaluate.py", f"--policies={tmp_path / 'pt'},{sft},{ppo}", f"--data_dir={world}", f"--reward={rm}",
               "--max_new_tokens=8", "--best_of=2", f"--snapshots={ppo}", f"--out_dir={out}")
    res = json.load(open(out / "results.json"))
    pol = res["policies"]
    assert list(pol) == ["gpt", "gpt_prompted", "sft", "ppo", "best_of_2"]
    for name, p in pol.items():
        assert 0 <= p["win_rate_vs_sft"] <= 1 and p["win_ci95"][0] <= p["win_rate_vs_sft"] <= p["win_ci95"][1]
        assert p["n_prompts"] == 240 and isinstance(p["rm_score"], float) and p["mean_len"] >= 0
        assert set(p) >= {"gold_score", "win_rate_vs_sft", "win_ci95", "rm_score", "kl_to_sft", "mean_len",
                          "families"}
    assert pol["sft"]["win_rate_vs_sft"] == 0.5 and pol["sft"]["win_ci95"] == [0.5, 0.5]
    assert pol["sft"]["kl_to_sft"] == 0.0 and pol["ppo"]["kl_to_sft"] != 0.0
    assert pol["gpt"]["kl_to_sft"] is None and pol["gpt_prompted"]["few_shot_mean"] > 0
    assert pol["best_of_2"]["kl_to_sft"] == math.log(2) - 0.5
    # the best-of-n curve on the same candidates: n = 1 is a plain T=1 sample, n = N is the best_of_N row
    curve = res["best_of_n"]
    assert [c["n"] for c in curve] == [1, 2] and [c["kl_to_sft"] for c in curve] == [0.0, math.log(2) - 0.5]
    assert curve[-1]["gold_score"] == pol["best_of_2"]["gold_score"]
    assert curve[1]["rm_score"] >= curve[0]["rm_score"]  # the pick of two scores at least the first one
    assert set(res["reward_model"]) >= {"val_accuracy", "length_baseline_accuracy"}
    assert [s["step"] for s in res["overoptimisation"]["snapshots"]] == [0, 1, 2]
    assert "win vs sft" in proc.stdout and "over-optimisation" in proc.stdout


def test_the_labeler_is_the_file_given_not_a_module_of_that_name(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "labeler", types.SimpleNamespace(score=lambda record, response: 1.0))
    for name in ("labeler.py", "common.py"):  # another dataset's labeler, or one named like a repository module
        (tmp_path / name).write_text("def score(record, response):\n    return 0.25\n")
        assert load_labeler(str(tmp_path / name)).score({}, "anything") == 0.25
    assert load_labeler("") is None  # ppo.py --labeler= : no gold metric
    with pytest.raises(SystemExit, match="not found"):
        load_labeler(str(tmp_path / "nowhere.py"), required=True)
    with pytest.raises(SystemExit, match="not found"):
        load_labeler("", required=True)
