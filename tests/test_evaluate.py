"""evaluate.py with every row of the table on tiny checkpoints: names, win rates and their exact intervals, KL, the
failure table, the RM's report card, the over-optimisation tables, the alignment tax."""
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, TINY_MODEL, read, run
from common import load_checkpoint, load_labeler, model_from_checkpoint, save_checkpoint, setup
from evaluate import clopper_pearson, cloze, cloze_items, corpus_loss, corpus_windows, failure_rates, report_card, \
    win_rate
from model import GPT
from pretrain import get_batch, load_tokens
from sample import first_demonstrations, prose
from test_ppo import tiny_checkpoints
from tokenizer import get_tokenizer

sys.path.insert(0, os.path.join(ROOT, "data", "assistant"))
import prepare as assistant  # noqa: E402


def test_win_rate_counts_ties_half_with_an_interval():
    assert win_rate([1, 1], [1, 1]) == {"win_rate": 0.5, "ci95": [0.5, 0.5], "wins": 0, "ties": 2, "losses": 0,
                                        "sign_test_p": 1.0}
    w = win_rate([1, 0, 0.5, 0.2], [0, 1, 0.5, 0.1])  # win, loss, tie, win
    lo, hi = w["ci95"]
    assert w["win_rate"] == 0.625 and (w["wins"], w["ties"], w["losses"]) == (2, 1, 1)
    assert lo < 0.625 < hi and 0 <= lo and hi <= 1


def test_the_win_interval_is_exact_when_most_prompts_tie():
    lo, hi = clopper_pearson(8, 10)  # the textbook value
    assert lo == pytest.approx(0.4439, abs=1e-4) and hi == pytest.approx(0.9748, abs=1e-4)
    assert clopper_pearson(0, 5)[0] == 0.0 and clopper_pearson(5, 5)[1] == 1.0
    # 8 wins, 2 losses, 230 ties: the normal interval over prompts was [0.4997, 0.5253]; the sign test says p = 0.11
    w = win_rate([1] * 8 + [0] * 2 + [0.5] * 230, [0] * 8 + [1] * 2 + [0.5] * 230)
    assert w["win_rate"] == pytest.approx(0.5125) and w["ci95"][0] < 0.5 < w["ci95"][1]
    assert w["sign_test_p"] == pytest.approx(112 / 1024)  # 2 * P(X <= 2), X ~ Binomial(10, 1/2)
    assert w["ci95"] == pytest.approx([0.5 + 10 / 240 * (lo - 0.5), 0.5 + 10 / 240 * (hi - 0.5)])
    w = win_rate([1] * 10, [0] * 10)  # ten wins of ten: clearly better
    assert w["ci95"][0] > 0.5 and w["ci95"][1] == 1.0 and w["sign_test_p"] == pytest.approx(2 / 1024)
    assert win_rate([0.3] * 50, [0.3] * 50)["ci95"] == [0.5, 0.5]
    assert clopper_pearson(600, 1200)[0] == pytest.approx(0.4713, abs=1e-3)  # large n: no float overflow


def test_failure_rates_count_only_the_prompts_where_a_failure_can_occur():
    labeler = types.SimpleNamespace(AXES={"harmful": "helps", "wrong": "a wrong answer", "constraint": "ignores"},
                                    applies=lambda record: record["applies"])
    records = [{"applies": ["harmful"]}, {"applies": ["wrong"]}, {"applies": ["wrong"]}]
    reasons = [["harmful"], ["wrong", "harmful"], []]  # the second "harmful" is on a prompt where it cannot occur
    assert failure_rates(labeler, records, reasons) == {"harmful": 1.0, "wrong": 0.5, "constraint": None}


class ShorterIsBetterRM(torch.nn.Module):
    """A stand-in reward model: minus the sequence's length (a tie when two answers are as long)."""
    gpt = types.SimpleNamespace(config=types.SimpleNamespace(block_size=256))

    def forward(self, idx, attention_mask):
        return -attention_mask.sum(1).float()


def test_report_card_scores_the_ideal_against_each_edit():
    ask = lambda q: [{"role": "user", "content": q}]
    records = [{"messages": ask("Colour of the vorpel?"), "ideal": "Red.", "held_out": True,
                "edits": {"filler": "Sure! Red.", "wrong": "Tan."}},                     # filler longer; wrong ties
               {"messages": ask("Colour of the grato?"), "ideal": "Blue.", "held_out": False,
                "edits": {"wrong": "Green."}},                                           # the ideal is shorter
               {"messages": ask("Hello?"), "ideal": "Hi."}]                               # no edits: no pairs
    axes, pairs, split = report_card(ShorterIsBetterRM(), get_tokenizer("bytes"), records, setup("cpu", "float32"))
    assert axes == {"filler": 1.0, "wrong": 0.75} and pairs == {"filler": 1, "wrong": 2}
    assert split == {"held_out": 0.5, "trained": 1.0}


def test_corpus_val_loss_is_pretrains_val_loss_on_the_same_windows(world, tiny_pt):
    ckpt = load_checkpoint(tiny_pt)
    cfg, model, rt = ckpt["config"], model_from_checkpoint(ckpt).eval(), setup("cpu", "float32")
    _, val, _ = load_tokens(world)
    block, n = cfg["block_size"], cfg["batch_size"]
    # pretrain.py's last estimate (its val_loss): one batch (eval_iters=1) of random windows from its seeded generator
    assert cfg["eval_iters"] == 1 and block == model.config.block_size
    starts = torch.randint(len(val) - block - 1, (n,), generator=torch.Generator().manual_seed(cfg["seed"])).tolist()
    x, _ = get_batch(val, n, block, torch.Generator().manual_seed(cfg["seed"]))
    assert torch.equal(x, torch.tensor(np.stack([val[s:s + block].astype(np.int64) for s in starts])))  # its windows
    assert corpus_loss(model, val, starts, block, rt, batch_size=n) == pytest.approx(ckpt["val_loss"], rel=1e-5)
    # evaluate.py's windows: the first ones, end to end; against the obvious loop over them, one window at a time
    starts = corpus_windows(val, block, 5)
    assert starts == [0, 160, 320, 480, 640] and corpus_windows(np.zeros(10), 4, 5) == [0, 4]  # [8:13] is too long
    with torch.no_grad():
        direct = [F.cross_entropy(model(torch.tensor(val[s:s + block].astype(np.int64))[None])[0][0],
                                  torch.tensor(val[s + 1:s + block + 1].astype(np.int64))).item() for s in starts]
    assert corpus_loss(model, val, starts, block, rt, batch_size=2) == pytest.approx(sum(direct) / 5, rel=1e-5)


def test_cloze_items_are_the_corpus_sentences_of_every_fact_the_prompts_state(world):
    records = [r for name in ("prompts_eval", "prompts_rl", "prompts_label") for r in read(world / f"{name}.jsonl")]
    items = cloze_items(records)
    world_map, _, docs, held = assistant.build(0)  # the fixture's world (seed 0)
    text = " ".join(docs)
    held_facts = {tuple(f) for f in held["facts"]}
    asked = {r["ideal"] for r in records if r["family"] == "knowledge" and r.get("held_out")}
    facts = set()
    for context, endings, label, held_out in items:
        animal = context.split(" ")[1]
        attr = next(k for k, values in assistant.ATTRS.items() if endings[label][1:-1] in values)
        facts.add((animal, attr))
        assert endings == [f" {v}." for v in sorted(assistant.ATTRS[attr])]  # the attribute's 8 values
        assert endings[label] == f" {world_map[animal][attr]}."               # the true one
        assert context + endings[label] in text                               # a sentence of the corpus
        assert held_out == ((animal, attr) in held_facts)
    assert len(facts) == len(items)  # one item per fact
    held_items = [c + e[i] for c, e, i, h in items if h]
    assert set(held_items) == asked and len(held_items) == len(asked)  # the held-out facts eval asks
    assert len(items) - len(held_items) == len(world_map) * 3 - len(held_facts)  # every trained fact


def test_the_cloze_ranks_the_trained_value_first_and_a_model_that_knows_nothing_is_at_chance(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tok = get_tokenizer("bytes")
    ids = (tok.encode("The zoopet eats nuts.") + [tok.eot_id] + tok.encode("The blorp lives in the cave.")
           + [tok.eot_id]) * 200
    for split in ("train", "val"):
        np.array(ids, dtype=np.uint16).tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(json.dumps({"tokenizer": "bytes", "vocab_size": tok.vocab_size}))
    run("pretrain.py", f"--data_dir={data}", *TINY_MODEL, "--batch_size=8", "--max_iters=150", "--eval_iters=1",
        "--eval_interval=150", "--warmup_iters=10", f"--out_dir={tmp_path / 'pt'}")
    items = [("The zoopet eats", [" figs.", " kelp.", " rice.", " nuts.", " oats.", " yams.", " corn.", " beef."], 3,
              True),
             ("The blorp lives in the", [" bogs.", " dune.", " reef.", " hill.", " glen.", " moor.", " cave.",
                                         " lake."], 6, False)]
    rt = setup("cpu", "float32")
    trained = model_from_checkpoint(load_checkpoint(tmp_path / "pt")).eval()
    assert cloze(trained, tok, items, rt, batch_size=5) == [1.0, 1.0]
    # knowing nothing: zero (tied) embeddings give every next token 1/V, so endings of one length tie 8 ways
    blank = GPT(trained.config).eval()
    torch.nn.init.zeros_(blank.lm_head.weight)
    assert cloze(blank, tok, items, rt) == [1 / 8, 1 / 8]


def test_a_labeler_without_reasons_stops_before_anything_is_loaded(tmp_path):
    old = tmp_path / "labeler.py"
    old.write_text("def score(record, response):\n    return 1.0\n")
    out = tmp_path / "eval"
    proc = run("evaluate.py", f"--labeler={old}", f"--policies={tmp_path / 'no_such_ckpt'}", f"--out_dir={out}",
               check=False)
    assert proc.returncode == 1 and f"labeler {old} gives no reasons" in proc.stderr
    assert "data/assistant/labeler.py" in proc.stderr and not out.exists()


def test_no_t1_samples_is_refused_before_anything_is_loaded(tmp_path):
    # the KL to SFT is a mean over the T=1 samples: with none it divided by zero after every greedy answer was made
    out = tmp_path / "eval"
    proc = run("evaluate.py", "--t1_samples=0", f"--policies={tmp_path / 'no_such_ckpt'}", f"--out_dir={out}",
               check=False)
    assert proc.returncode == 1 and "--t1_samples must be at least 1 (got 0)" in proc.stderr and not out.exists()


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
    labeler = load_labeler(f"{ROOT}/data/assistant/labeler.py")
    for name, p in pol.items():
        assert 0 <= p["win_rate_vs_sft"] <= 1 and p["win_ci95"][0] <= p["win_rate_vs_sft"] <= p["win_ci95"][1]
        assert p["wins"] + p["ties"] + p["losses"] == p["n_prompts"] == 240 and 0 < p["sign_test_p"] <= 1
        assert isinstance(p["rm_score"], float) and p["mean_len"] >= 0
        assert set(p) >= {"gold_score", "win_rate_vs_sft", "win_ci95", "rm_score", "kl_to_sft", "mean_len",
                          "families", "failures"}
        assert list(p["failures"]) == list(labeler.AXES)
        assert all(r is None or 0 <= r <= 1 for r in p["failures"].values())
    assert any(r is not None for r in pol["sft"]["failures"].values())
    assert pol["sft"]["win_rate_vs_sft"] == 0.5 and pol["sft"]["win_ci95"] == [0.5, 0.5]
    assert pol["sft"]["ties"] == 240 and pol["sft"]["sign_test_p"] == 1.0
    assert pol["sft"]["kl_to_sft"] == 0.0 and pol["ppo"]["kl_to_sft"] != 0.0
    assert pol["gpt"]["kl_to_sft"] is None and pol["gpt_prompted"]["few_shot_mean"] > 0
    assert pol["best_of_2"]["kl_to_sft"] == math.log(2) - 0.5 and pol["best_of_2"]["kl_is_upper_bound"]
    # win rate at T = 1 (2 samples per prompt) for the chat policies only; SFT against its own samples is one half
    for name in ("sft", "ppo"):
        p = pol[name]
        assert p["win_t1_ci95"][0] <= p["win_rate_t1_vs_sft"] <= p["win_t1_ci95"][1]
        assert 0 <= p["gold_score_t1"] <= 1
    assert pol["sft"]["win_rate_t1_vs_sft"] == 0.5 and pol["sft"]["win_t1_ci95"] == [0.5, 0.5]
    assert all(pol[name]["win_rate_t1_vs_sft"] is None for name in ("gpt", "gpt_prompted", "best_of_2"))
    # the RM's report card: one accuracy per axis the eval prompts have controlled pairs for
    edits = [a for r in read(world / "prompts_eval.jsonl") for a in r.get("edits", {})]
    card = res["reward_model"]
    assert edits and set(card["axes"]) == set(edits) and all(0 <= v <= 1 for v in card["axes"].values())
    assert card["axes_pairs"] == {a: edits.count(a) for a in set(edits)}
    assert set(card["wrong_by_split"]) == {"held_out", "trained"}
    # the best-of-n curve on the same candidates: n = 1 is a plain T=1 sample, n = N is the best_of_N row
    curve = res["best_of_n"]
    assert [c["n"] for c in curve] == [1, 2] and [c["kl_to_sft"] for c in curve] == [0.0, math.log(2) - 0.5]
    assert all(c["kl_is_upper_bound"] for c in curve)
    assert curve[-1]["gold_score"] == pol["best_of_2"]["gold_score"]
    assert curve[1]["rm_score"] >= curve[0]["rm_score"]  # the pick of two scores at least the first one
    assert set(res["reward_model"]) >= {"val_accuracy", "length_baseline_accuracy"}
    assert [s["step"] for s in res["overoptimisation"]["snapshots"]] == [0, 1, 2]
    assert "win vs sft" in proc.stdout and "over-optimisation" in proc.stdout and "win@T=1" in proc.stdout
    assert "Figure 4" in proc.stdout and "report card" in proc.stdout and "<=0.19" in proc.stdout
    # the alignment tax for every row, measured once per set of weights
    tax = res["alignment_tax"]
    assert list(tax) == list(pol) and "alignment tax" in proc.stdout
    assert tax["gpt_prompted"] == {**tax["gpt"], "same_weights_as": "gpt"}
    assert tax["best_of_2"] == {**tax["sft"], "same_weights_as": "sft"}
    for name in ("gpt", "sft", "ppo"):
        t = tax[name]
        assert t["same_weights_as"] is None and t["corpus_val_loss"] > 0 and t["corpus_val_tokens"] == 256 * 160
        assert t["cloze_items"]["all"] == t["cloze_items"]["held_out"] + t["cloze_items"]["trained"] > 0
        assert all(0 <= a <= 1 for a in t["cloze_accuracy"].values()) and t["cloze_chance"] == 1 / 8
    assert tax["gpt"]["corpus_val_loss"] == tax["sft"]["corpus_val_loss"] != tax["ppo"]["corpus_val_loss"]


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
