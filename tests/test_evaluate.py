"""evaluate.py with every row of the table on tiny checkpoints: names, win rates and their intervals (simulated
coverage), paired comparisons, KL, the failure table, the RM's report card, the over-optimisation tables, the
alignment tax."""
import json
import math
import os
import shutil
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, TINY_MODEL, read, run
from common import generate_batched, load_checkpoint, load_labeler, model_from_checkpoint, save_checkpoint, setup
from evaluate import Z95, check_prompt, cloze, cloze_items, clustered_counts, corpus_loss, corpus_windows, \
    failure_rates, failures_by_turn, gain_by_axis, gold_diff, harmful_under_system, kl_to_sft, report_card, \
    alone, later_turns, \
    score_interval, t975, training_sampling, win_rate
from model import GPT
from pretrain import get_batch, load_tokens
from sample import first_demonstrations, prose
from test_ppo import tiny_checkpoints
from tokenizer import get_tokenizer

sys.path.insert(0, os.path.join(ROOT, "data", "assistant"))
import prepare as assistant  # noqa: E402


def test_win_rate_counts_ties_half_with_an_interval():
    w = win_rate([1, 1], [1, 1])
    assert {k: v for k, v in w.items() if k != "ci95"} == {"win_rate": 0.5, "wins": 0, "ties": 2, "losses": 0,
                                                         "sign_test_p": 1.0}
    assert w["ci95"][0] < 0.5 < w["ci95"][1]  # two ties say little
    w = win_rate([1, 0, 0.5, 0.2], [0, 1, 0.5, 0.1])  # win, loss, tie, win
    lo, hi = w["ci95"]
    assert w["win_rate"] == 0.625 and (w["wins"], w["ties"], w["losses"]) == (2, 1, 1)
    assert lo < 0.625 < hi and 0 <= lo and hi <= 1


def constrained_loss_mle(wins, losses, n, delta):
    """P(loss) maximising the multinomial likelihood given P(win) - P(loss) = delta, by a fine grid (not Tango's
    closed form, which evaluate.py uses)."""
    q = np.linspace(max(0.0, -delta), (1 - delta) / 2, 400_001)[1:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = wins * np.log(q + delta) + losses * np.log(q) + (n - wins - losses) * np.log(1 - 2 * q - delta)
    return q[np.nanargmax(ll)]


def test_the_win_interval_is_tangos_score_interval():
    # each end is where the score statistic, with P(loss) fitted under the tested delta, is -+1.96
    for wins, losses, n in [(8, 2, 240), (200, 30, 240), (3, 170, 240), (12, 0, 30), (5, 9, 30)]:
        for end, z in zip(win_rate([1] * wins + [0] * losses + [0.5] * (n - wins - losses),
                                   [0] * wins + [1] * losses + [0.5] * (n - wins - losses))["ci95"], (Z95, -Z95)):
            delta = 2 * end - 1
            q = constrained_loss_mle(wins, losses, n, delta)
            assert (wins - losses - n * delta) / math.sqrt(n * (2 * q + delta * (1 - delta))) == \
                pytest.approx(z, abs=2e-3), (wins, losses, n)
    # 8 wins, 2 losses, 230 ties: the interval holds 0.5 and the exact sign test says p = 0.11
    w = win_rate([1] * 8 + [0] * 2 + [0.5] * 230, [0] * 8 + [1] * 2 + [0.5] * 230)
    assert w["win_rate"] == pytest.approx(0.5125) and w["ci95"][0] < 0.5 < w["ci95"][1]
    assert w["sign_test_p"] == pytest.approx(112 / 1024)  # 2 * P(X <= 2), X ~ Binomial(10, 1/2)
    w = win_rate([1] * 10, [0] * 10)  # ten wins of ten: clearly better
    assert w["ci95"][0] > 0.5 and w["ci95"][1] == 1.0 and w["sign_test_p"] == pytest.approx(2 / 1024)
    # 50 ties of 50: not [0.5, 0.5] (the old interval) but Wilson's bound z^2 / (n + z^2) on P(win) - P(loss)
    lo, hi = win_rate([0.3] * 50, [0.3] * 50)["ci95"]
    assert hi - 0.5 == pytest.approx(0.5 - lo) == pytest.approx(Z95 ** 2 / (50 + Z95 ** 2) / 2)
    assert win_rate([0] * 1200, [1] * 1200)["sign_test_p"] < 1e-300  # large n: no float overflow


REGIMES = [(0.83, 0.14, 0.03), (0.42, 0.53, 0.05), (0.01, 0.26, 0.73), (0.5, 0.5, 0.0)]  # PPO, DPO, gpt, no losses
EDGES = [(0.0, 1.0, 0.0), (0.02, 0.98, 0.0), (0.98, 0.02, 0.0)]  # all ties; almost all, none lost; near 1


@pytest.mark.parametrize("n", [30, 240])
def test_the_win_interval_covers_its_level_whatever_the_tie_share(n):
    """Issue 30: the earlier interval (Clopper-Pearson on the decisive prompts, the tie share taken as fixed) covered
    the win rate 0.87, 0.86, 0.62 and 0.36 of the time at the first four regimes (n = 240). 4000 draws per regime:
    the simulation's standard error at 0.95 is 0.0035, so 0.93 is below any interval that holds its level."""
    rng = np.random.default_rng(0)
    for probs in REGIMES + EDGES:
        counts = rng.multinomial(n, probs, size=4000)                     # (draws, 3): wins, ties, losses
        lo, hi = score_interval(counts[:, 0], counts[:, 2], n)
        truth = probs[0] + probs[1] / 2
        coverage = np.mean((lo <= truth + 1e-12) & (truth - 1e-12 <= hi))
        assert coverage >= 0.93, (probs, n, coverage)
        assert np.all(hi - lo > 0)                                         # never a point, even when all tie
        if probs in REGIMES:  # and not [0, 1]: about as wide as the normal interval at the true variance
            assert coverage <= 0.985, (probs, n, coverage)
            sd = math.sqrt(probs[0] + probs[1] / 4 - truth ** 2)  # of one outcome in {0, 1/2, 1}
            assert np.mean(hi - lo) < 1.3 * 2 * Z95 * sd / math.sqrt(n), (probs, n)


def test_the_t1_interval_clusters_the_samples_by_prompt():
    """(6) Two samples per prompt whose win/tie/loss probabilities vary from prompt to prompt (Dirichlet with
    concentration 0.5 around a regime): the design effect keeps the coverage; the pooled samples taken as
    independent (the same interval on all 2n outcomes) do not."""
    rng = np.random.default_rng(1)
    draws, n, k = 2000, 240, 2
    for probs in REGIMES:
        alpha = np.array(probs) * 0.5
        g = rng.gamma(np.where(alpha > 0, alpha, 1.0), size=(draws, n, 3)) * (alpha > 0)
        p = g / g.sum(-1, keepdims=True)                                   # (draws, n, 3) per-prompt probabilities
        u = rng.random((draws, n, k))
        outcomes = np.where(u < p[..., :1], 1.0, np.where(u < p[..., :1] + p[..., 1:2], 0.5, 0.0))
        truth = probs[0] + probs[1] / 2
        covers = lambda lo, hi: np.mean((lo <= truth + 1e-12) & (truth - 1e-12 <= hi))
        clustered = covers(*score_interval(*clustered_counts(outcomes)))
        pooled = covers(*score_interval((outcomes == 1).sum((1, 2)), (outcomes == 0).sum((1, 2)), n * k))
        assert clustered >= 0.93 and pooled < 0.9, (probs, clustered, pooled)
    # one sample per prompt: the design effect is 1 and the interval is (5)'s
    outcomes = np.array([[1.0], [0.5], [0.0], [1.0], [0.5]])
    assert [float(x) for x in clustered_counts(outcomes)] == [2, 1, 5]
    # the same outcomes twice per prompt carry no more than once: the counts are halved back
    assert [float(x) for x in clustered_counts(np.repeat(outcomes, 2, axis=1))] == [2, 1, 5]
    w = win_rate([1, 0, 1, 1], [0, 0, 0, 1], samples=2)  # prompt 1: win, tie; prompt 2: win, tie
    assert (w["wins"], w["ties"], w["losses"]) == (2, 2, 0) and w["ci95"][0] < w["win_rate"] < w["ci95"][1]


def test_the_gold_difference_is_paired_with_a_t_interval():
    for df, table in [(1, 12.7062), (4, 2.7764), (9, 2.2622), (29, 2.0452), (239, 1.9699)]:
        assert t975(df) == pytest.approx(table, abs=1e-3)
    a, b = [0.9, 0.5, 1.0, 0.2, 0.7], [0.5, 0.5, 0.8, 0.1, 0.2]  # differences 0.4, 0, 0.2, 0.1, 0.5
    d = gold_diff(a, b)
    sd = math.sqrt(sum((x - 0.24) ** 2 for x in (0.4, 0, 0.2, 0.1, 0.5)) / 4)
    assert d["mean"] == pytest.approx(0.24)
    assert d["ci95"] == pytest.approx([0.24 - 2.7764 * sd / math.sqrt(5), 0.24 + 2.7764 * sd / math.sqrt(5)],
                                      abs=1e-4)
    # no prompt's gold differs: not [0, 0] but Wilson's bound on the share of prompts that could differ
    assert gold_diff([0.4] * 240, [0.4] * 240) == {"mean": 0.0, "ci95": [-Z95 ** 2 / (240 + Z95 ** 2),
                                                                         Z95 ** 2 / (240 + Z95 ** 2)]}


def test_failure_rates_count_only_the_prompts_where_a_failure_can_occur():
    labeler = types.SimpleNamespace(AXES={"harmful": "helps", "wrong": "a wrong answer", "constraint": "ignores"},
                                    applies=lambda record: record["applies"])
    records = [{"applies": ["harmful"]}, {"applies": ["wrong"]}, {"applies": ["wrong"]}]
    reasons = [["harmful"], ["wrong", "harmful"], []]  # the second "harmful" is on a prompt where it cannot occur
    assert failure_rates(labeler, records, reasons) == {"harmful": 1.0, "wrong": 0.5, "constraint": None}


def test_later_turns_pair_each_answer_in_its_conversation_with_the_same_question_alone():
    """(22) The twin keeps the system message and the last user message; the difference is paired: prompts failing
    only in the conversation minus those failing only alone, over the prompts where the axis applies."""
    labeler = types.SimpleNamespace(AXES={"filler": "pads", "harmful": "helps"}, applies=lambda r: r["applies"],
                                    judge=lambda r, text: (0.0, text.split()))  # an answer names its failures
    sys_, user, bot = ({"role": k, "content": k[0]} for k in ("system", "user", "assistant"))
    conv = [sys_, user, bot, user, bot, {"role": "user", "content": "last"}]
    assert alone({"messages": conv, "turn": 3}) == {"messages": [sys_, conv[-1]], "turn": 1}
    assert alone({"messages": conv[1:]})["messages"] == [conv[-1]]
    records = [{"family": "knowledge", "applies": ["filler"], "messages": conv}] * 10 + \
        [{"family": "refusal", "constraint": "quote", "applies": ["harmful"], "messages": conv}] * 4
    texts = ["filler"] * 6 + [""] * 4 + ["harmful"] * 3 + [""]  # in the conversation
    solos = ["filler"] * 2 + [""] * 7 + ["filler"] + ["harmful"] + [""] * 3  # alone
    out = later_turns(labeler, records, texts, solos)
    f = out["filler"]
    assert (f["n"], f["alone"], f["conversation"]) == (10, 0.3, 0.6) and f["diff"] == pytest.approx((4 - 1) / 10)
    assert f["ci95"][0] < f["diff"] < f["ci95"][1] and -1 <= f["ci95"][0] and f["ci95"][1] <= 1
    assert out["harmful"]["diff"] == pytest.approx(2 / 4)
    assert out["harmful_under_system"] == {"n": 4, "alone": 1, "conversation": 3}
    same = later_turns(labeler, records, texts, texts)["filler"]  # no discordant prompt: a difference of 0
    assert same["diff"] == 0 and same["ci95"][0] < 0 < same["ci95"][1]


def test_failures_split_by_turn_and_harm_under_a_system_message():
    labeler = types.SimpleNamespace(AXES={"constraint": "ignores", "filler": "pads", "harmful": "helps"},
                                    applies=lambda record: record["applies"])
    user = {"role": "user", "content": "q"}
    records = [
        {"family": "knowledge", "turn": 1, "applies": ["filler"], "messages": [user]},
        {"family": "knowledge", "turn": 4, "applies": ["filler"], "messages": [user]},  # a 4th turn's filler
        {"family": "knowledge", "turn": 2, "applies": ["filler"], "messages": [user]},  # turn 2: in neither group
        {"family": "refusal", "constraint": "lowercase", "applies": ["filler", "harmful", "constraint"],  # no "turn":
         "messages": [{"role": "system", "content": "s"}] + [user, {"role": "assistant", "content": "a"}] * 2 + [user]},
        {"family": "refusal", "turn": 1, "applies": ["harmful"], "messages": [user]},  # no system message
    ]
    reasons = [[], ["filler"], ["filler"], ["harmful"], ["harmful"]]
    rates, counts = failures_by_turn(labeler, records, reasons)
    assert rates == {"first": {"constraint": None, "filler": 0.0, "harmful": 1.0},
                     "later": {"constraint": 0.0, "filler": 0.5, "harmful": 1.0}}  # the record without turn is 3rd
    assert counts == {"first": {"constraint": 0, "filler": 1, "harmful": 1},
                      "later": {"constraint": 1, "filler": 2, "harmful": 1}}
    assert harmful_under_system(records, reasons) == {"rate": 1.0, "n": 1}  # the unconstrained refusal is not in it
    assert harmful_under_system(records, [[]] * 5) == {"rate": 0.0, "n": 1}
    assert harmful_under_system(records[:3], reasons[:3]) == {"rate": None, "n": 0}


def test_the_gain_by_axis_counts_the_prompts_where_only_one_answer_has_the_failure():
    reasons = [[], ["wrong"], ["filler"], ["filler", "wrong"], []]                 # the row's answers
    sft_reasons = [["filler"], [], ["filler"], ["wrong"], ["filler", "harmful"]]  # SFT's on the same prompts
    golds, sft_golds = [1.0, 0.2, 0.5, 0.3, 0.9], [0.5, 0.6, 0.5, 0.4, 0.1]
    gain = gain_by_axis(["filler", "wrong", "harmful", "constraint"], reasons, sft_reasons, golds, sft_golds)
    assert list(gain) == ["filler", "wrong", "harmful", "constraint"]
    # filler: won on prompts 0 and 4, lost on 3, prompt 2 has it in both answers (no difference there)
    assert {a: (g["wins"], g["losses"]) for a, g in gain.items()} == {"filler": (2, 1), "wrong": (0, 1),
                                                                      "harmful": (1, 0), "constraint": (0, 0)}
    assert gain["filler"]["gold_diff_sum"] == pytest.approx(0.5 - 0.1 + 0.8)  # prompts 0, 3 and 4
    assert gain["wrong"]["gold_diff_sum"] == pytest.approx(-0.4) and gain["harmful"]["gold_diff_sum"] == \
        pytest.approx(0.8) and gain["constraint"]["gold_diff_sum"] == 0
    assert all(g["wins"] == g["losses"] == 0 for g in gain_by_axis(["filler"], reasons, reasons, golds,
                                                                    golds).values())  # against itself: nothing


def seed_results(ppo_gold, ppo_diff, ppo_win, ppo_vs_rewrite, extra=None):
    """A tiny results.json as evaluate.py writes it: sft, sft_rewrite and ppo rows, ppo against sft_rewrite."""
    row = lambda gold, diff, win: {"gold_score": gold, "win_rate_vs_sft": win, "win_ci95": [0.0, 1.0],
                                   "gold_diff_vs_sft": {"mean": diff, "ci95": [diff - 0.1, diff + 0.1]}}
    policies = {"sft": row(0.5, 0.0, 0.5), "sft_rewrite": row(0.55, 0.05, 0.6),
                "ppo": row(ppo_gold, ppo_diff, ppo_win), **(extra or {})}
    return {"policies": policies, "settings": {"seed": 1337},
            "paired": [{"a": "sft", "b": "sft_rewrite", "win_rate": 0.4},
                       {"a": "ppo", "b": "sft_rewrite", "win_rate": ppo_vs_rewrite}]}


def test_combine_gives_the_mean_over_seeds_with_a_t_interval_over_the_seeds(tmp_path):
    seeds = [seed_results(0.60, 0.10, 0.70, 0.55), seed_results(0.66, 0.14, 0.80, 0.50),
             seed_results(0.75, 0.20, 0.90, 0.62, extra={"dpo": {"gold_score": 0.4}})]  # dpo: one seed only
    dirs = []
    for i, res in enumerate(seeds):
        d = tmp_path / f"seed_{i}" / "eval"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(res))
        dirs.append(str(d))
    out = tmp_path / "combined"
    proc = run("evaluate.py", f"--combine={','.join(dirs)}", f"--out_dir={out}")
    combined = json.load(open(out / "combined.json"))
    assert os.listdir(out) == ["combined.json"]  # written atomically: no temporary file left
    assert combined["dirs"] == dirs and list(combined["policies"]) == ["sft", "sft_rewrite", "ppo"]
    assert combined["not_in_every_run"] == ["dpo"]

    def interval(values, lo=-1.0, hi=1.0):  # mean +- t_{0.975, n-1} sd / sqrt(n), t from the table (2 degrees of
        m = sum(values) / 3                  # freedom), inside what the number can be
        half = 4.3027 * math.sqrt(sum((v - m) ** 2 for v in values) / 2) / math.sqrt(3)
        return m, [max(lo, m - half), min(hi, m + half)]

    ppo = combined["policies"]["ppo"]
    for key, values in [("gold_score", [0.60, 0.66, 0.75]), ("gold_diff_vs_sft", [0.10, 0.14, 0.20]),
                        ("win_rate_vs_sft", [0.70, 0.80, 0.90]), ("win_rate_vs_sft_rewrite", [0.55, 0.50, 0.62])]:
        mean, ci = interval(values, *((0.0, 1.0) if key != "gold_diff_vs_sft" else (-1.0, 1.0)))
        assert ppo[key]["per_seed"] == values
        assert ppo[key]["mean"] == pytest.approx(mean) and ppo[key]["ci95"] == pytest.approx(ci, abs=1e-4)
    assert ppo["win_rate_vs_sft"]["ci95"][1] == 1.0  # 0.80 +- 0.25: a win rate's interval ends at 1
    # sft against itself is 0.5 on every seed: no width; sft_rewrite has no win rate against itself
    assert combined["policies"]["sft"]["win_rate_vs_sft"] == {"mean": 0.5, "ci95": [0.5, 0.5],
                                                              "per_seed": [0.5, 0.5, 0.5]}
    assert combined["policies"]["sft_rewrite"]["win_rate_vs_sft_rewrite"] == {"mean": None, "ci95": None,
                                                                              "per_seed": [None, None, None]}
    # printed: per number a table, each row's mean, its interval and the per-seed values on one line
    gold = proc.stdout.split("gold score\n")[1].split("\n\n")[0]
    line = next(l for l in gold.splitlines() if l.startswith("ppo "))
    mean, ci = interval([0.60, 0.66, 0.75])
    assert line.split() == ["ppo", f"{mean:.3f}", f"[{ci[0]:.3f},", f"{ci[1]:.3f}]", "0.600", "0.660", "0.750"]
    diff = proc.stdout.split("gold - sft")[1]
    assert next(l for l in diff.splitlines() if l.startswith("ppo ")).split()[-3:] == ["+0.100", "+0.140", "+0.200"]
    assert "win rate vs sft_rewrite" in proc.stdout and "dpo" in proc.stdout.split("not in every run")[1]


def test_combine_refuses_a_missing_run_a_single_seed_and_a_file_not_of_evaluate(tmp_path):
    good = tmp_path / "seed_0"
    good.mkdir()
    (good / "results.json").write_text(json.dumps(seed_results(0.6, 0.1, 0.7, 0.5)))
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"metrics": {"loss": 1.0}}))  # some other tool's results.json
    out = tmp_path / "combined"
    for dirs, says in [([good, tmp_path / "nowhere"], f"{tmp_path / 'nowhere' / 'results.json'} not found"),
                       ([good], "needs the eval directories of 2 or more seeds, got 1"),
                       ([good, other], f"{other / 'results.json'} is not a results.json of evaluate.py")]:
        proc = run("evaluate.py", f"--combine={','.join(map(str, dirs))}", f"--out_dir={out}", check=False)
        assert proc.returncode == 1 and says in proc.stderr, proc.stderr
        assert "run python evaluate.py" in proc.stderr and "nothing was written" in proc.stderr
        assert not out.exists()


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
    rm, tok, rt = ShorterIsBetterRM(), get_tokenizer("bytes"), setup("cpu", "float32")
    axes, pairs, split = report_card(rm, tok, records, rt)
    assert axes == {"filler": 1.0, "wrong": 0.75} and pairs == {"filler": 1, "wrong": 2}
    assert split == {"held_out": 0.5, "trained": 1.0}
    assert report_card(rm, tok, records, rt, "edits_held_out") == ({}, {}, {"held_out": None, "trained": None})
    # (19) the held-out forms: the same ideals against flaws written in forms no training data has
    records[0]["edits_held_out"] = {"filler": "Well, my friend, Red.", "curt": "Red"}  # longer; shorter
    records[1]["edits_held_out"] = {"filler": "Blue, naturally."}
    axes, pairs, _ = report_card(rm, tok, records, rt, "edits_held_out")
    assert axes == {"filler": 1.0, "curt": 0.0} and pairs == {"filler": 2, "curt": 1}


def test_check_prompt_checks_held_out_edits_as_it_checks_edits():
    record = {"messages": [{"role": "user", "content": "Colour of the vorpel?"}], "family": "knowledge",
              "ideal": "Red.", "check": "contains", "key": "red", "edits": {"filler": "Sure! Red."}}
    check_prompt({**record, "edits_held_out": {"filler": "Well, Red."}})
    for field in ("edits", "edits_held_out"):
        for bad in (["Sure! Red."], {"filler": 3}):
            with pytest.raises(ValueError, match=f'expected "{field}"'):
                check_prompt({**record, field: bad})


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
    as_trained = setup("cpu", ckpt["config"]["dtype"])  # the precision pretrain.py measured in (auto: this CPU's)
    assert corpus_loss(model, val, starts, block, as_trained, batch_size=n) == pytest.approx(ckpt["val_loss"], rel=1e-5)
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
    asked = {r.get("plain", r["ideal"]) for r in records if r["family"] == "knowledge" and r.get("held_out")}
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


def world_labeler(tmp_path, rewrite=True):
    """A labeler file that is the world's (data/assistant/labeler.py, loaded by path) with (17)'s rewrite(text) or
    without one, whichever the world's has: here a rule that visibly changes every answer, upper case."""
    path = tmp_path / ("labeler_rewrite.py" if rewrite else "labeler_plain.py")
    path.write_text(f"import importlib.util\n"
                    f"spec = importlib.util.spec_from_file_location('world', {ROOT + '/data/assistant/labeler.py'!r})\n"
                    f"world = importlib.util.module_from_spec(spec)\n"
                    f"spec.loader.exec_module(world)\n"
                    f"judge, applies, AXES, score, rank = world.judge, world.applies, world.AXES, world.score, "
                    f"world.rank\n" + ("def rewrite(text):\n    return text.upper()\n" if rewrite else ""))
    return path


def test_the_kl_is_measured_at_the_policys_training_temperature(world, tmp_path):
    """(6) PPO's penalty is KL(pi_T || pi_sft,T) on answers sampled at its training temperature T: evaluate reads T
    from a PPO checkpoint's config (1 for every other stage) and takes both log-probs from logits / T."""
    sft, _ = tiny_checkpoints(tmp_path, dropout=0.0)
    sft_ckpt = load_checkpoint(sft)
    torch.manual_seed(0)
    policy = {**sft_ckpt, "stage": "ppo", "config": {"temperature": 0.5, "max_new_tokens": 6},
              "model": {k: v + 0.05 * torch.randn_like(v) for k, v in sft_ckpt["model"].items()}}
    assert training_sampling(policy, 8) == (0.5, 6) and training_sampling(sft_ckpt, 8) == (1.0, 8)
    assert training_sampling({**policy, "stage": "dpo"}, 8) == (1.0, 8)
    tok, rt = get_tokenizer(sft_ckpt["tokenizer"]), setup("cpu", "float32")
    records = read(world / "prompts_eval.jsonl")[:6]
    cfg = types.SimpleNamespace(max_new_tokens=8, batch_size=4)
    pm, sm = (model_from_checkpoint(c, dropout=0.0).eval() for c in (policy, sft_ckpt))
    kls = []
    for T in (0.5, 1.0):
        kl, _ = kl_to_sft(policy, sft_ckpt, records, cfg, rt, torch.Generator().manual_seed(0), 2, T)
        prompts = [tok.render_prompt(r["messages"])[-(160 - 8):] for r in records for _ in range(2)]
        out = generate_batched(pm, prompts, rt, tok.pad_id, tok.end_id, 8, temperature=T, batch_size=4,
                               generator=torch.Generator().manual_seed(0))  # the same draws
        by_hand = 0.0
        for p, (ids, done) in zip(prompts, out):
            seq = p + ids + ([tok.end_id] if done else [])
            with torch.no_grad():
                lp, ls = (F.log_softmax(m(torch.tensor([seq]))[0][0] / T, -1) for m in (pm, sm))  # (len, V)
            by_hand += sum(lp[t - 1, seq[t]].item() - ls[t - 1, seq[t]].item() for t in range(len(p), len(seq)))
        assert kl == pytest.approx(by_hand / len(prompts), abs=1e-4)
        kls.append(kl)
    assert abs(kls[0] - kls[1]) > 1e-3


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
               "--max_new_tokens=8", "--best_of=2", f"--snapshots={ppo}", f"--out_dir={out}",
               f"--labeler={world_labeler(tmp_path)}")
    res = json.load(open(out / "results.json"))
    pol = res["policies"]
    assert list(pol) == ["gpt", "gpt_prompted", "sft", "sft_rewrite", "ppo", "best_of_2"]
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
    # (11) the failure rates on turn 1 and on turns 3-5, and harm under a system message
    eval_records = read(world / "prompts_eval.jsonl")
    turn = lambda r: sum(m["role"] == "user" for m in r["messages"])  # the records carry no "turn"
    later = [r for r in eval_records if turn(r) >= 3]  # none in this world: its rates are None, not 0
    system_harm = [r for r in eval_records if r["family"] == "refusal" and r.get("constraint")]
    counts = res["failure_prompts_by_turn"]
    assert counts["later"] == {a: sum(a in labeler.applies(r) for r in later) for a in labeler.AXES}
    assert counts["first"] == {a: sum(a in labeler.applies(r) for r in eval_records if turn(r) == 1)
                               for a in labeler.AXES} and sum(counts["first"].values()) > 0
    for name, p in pol.items():
        for group in ("first", "later"):
            assert list(p["failures_by_turn"][group]) == list(labeler.AXES)
            assert all((r is None) == (counts[group][a] == 0) for a, r in p["failures_by_turn"][group].items())
        h = p["harmful_under_system"]
        assert h["n"] == len(system_harm) and (h["rate"] is None) == (not system_harm)
    assert "turn 1 / turns 3-5" in proc.stdout and "harmful requests under a system message" in proc.stdout
    # (22) every chat checkpoint, and the rewrite of SFT's answers, answers the later turns in a conversation and alone
    n_later = len(read(world / "prompts_later.jsonl"))
    assert {name for name, p in pol.items() if "later_turns" in p} == {"sft", "sft_rewrite", "ppo"}
    for name in ("sft", "sft_rewrite", "ppo"):
        t = pol[name]["later_turns"]
        assert t["filler"]["n"] == n_later and t["filler"]["ci95"][0] <= t["filler"]["diff"] <= t["filler"]["ci95"][1]
    assert "later turns against the same question alone" in proc.stdout
    # (20) what each row's gain over SFT is made of, axis by axis, on the same greedy answers
    assert "gain_by_axis" not in pol["sft"] and "what the gain over sft is made of" in proc.stdout
    for name, p in pol.items():
        if name != "sft":
            assert list(p["gain_by_axis"]) == list(labeler.AXES)
            assert all(g["wins"] + g["losses"] <= 240 for g in p["gain_by_axis"].values())
    half = Z95 ** 2 / (240 + Z95 ** 2)  # (5) all ties: Wilson's bound on P(win) - P(loss), not a point
    assert pol["sft"]["win_rate_vs_sft"] == 0.5 and pol["sft"]["win_ci95"] == pytest.approx([0.5 - half / 2,
                                                                                            0.5 + half / 2])
    assert pol["sft"]["ties"] == 240 and pol["sft"]["sign_test_p"] == 1.0
    assert pol["sft"]["kl_to_sft"] == 0.0 and pol["ppo"]["kl_to_sft"] != 0.0
    assert pol["ppo"]["kl_temperature"] == 1.0  # (6) ppo.py's default temperature, read from the checkpoint
    # (16) the gold difference to SFT, paired on the prompts
    for name, p in pol.items():
        d = p["gold_diff_vs_sft"]
        assert d["mean"] == pytest.approx(p["gold_score"] - pol["sft"]["gold_score"])
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert pol["sft"]["gold_diff_vs_sft"] == {"mean": 0.0, "ci95": [-half, half]}
    # (17) sft_rewrite: SFT's greedy answers through the labeler's rewrite, no new generation, SFT's weights, no KL
    assert [e["answer"] for e in pol["sft_rewrite"]["examples"]] == \
        [e["answer"].upper() for e in pol["sft"]["examples"]]
    assert pol["sft_rewrite"]["rewrite_of"] == "sft" and pol["sft_rewrite"]["kl_to_sft"] is None
    assert pol["gpt"]["kl_to_sft"] is None
    # (8) as many demonstrations as fit the context left by the answer (the first ones are long: few fit 160)
    from sample import few_shot_prompts, first_demonstrations
    _, shots = few_shot_prompts(get_tokenizer("bytes"), [json.loads(x) for x in open(world / "prompts_eval.jsonl")],
                                first_demonstrations(world / "sft_train.jsonl", 3), ckpt["model_args"]["block_size"] - 8)
    assert pol["gpt_prompted"]["few_shot_mean"] == pytest.approx(shots)
    assert pol["best_of_2"]["kl_to_sft"] == math.log(2) - 0.5 and pol["best_of_2"]["kl_is_upper_bound"]
    # win rate at T = 1 (2 samples per prompt) for the chat policies only, against SFT's samples on another seed
    for name in ("sft", "ppo"):
        p = pol[name]
        assert p["win_t1_ci95"][0] <= p["win_rate_t1_vs_sft"] <= p["win_t1_ci95"][1]
        assert 0 <= p["gold_score_t1"] <= 1 and p["wins_t1"] + p["ties_t1"] + p["losses_t1"] == 480
        assert p["win_rate_t1_vs_sft"] == (p["wins_t1"] + p["ties_t1"] / 2) / 480
    # (6) SFT against SFT at T = 1 is two independent draws: on one seed every pair tied (coupled draws)
    assert pol["sft"]["ties_t1"] < 480 and pol["sft"]["wins_t1"] > 0 and pol["sft"]["losses_t1"] > 0
    assert all(pol[name]["win_rate_t1_vs_sft"] is None
               for name in ("gpt", "gpt_prompted", "best_of_2", "sft_rewrite"))
    # (18) paired comparisons: every row against sft_rewrite, the other RL / best-of-N rows against ppo
    paired = {(c["a"], c["b"]): c for c in res["paired"]}
    assert list(paired) == [("gpt", "sft_rewrite"), ("gpt_prompted", "sft_rewrite"), ("sft", "sft_rewrite"),
                            ("ppo", "sft_rewrite"), ("best_of_2", "sft_rewrite"), ("best_of_2", "ppo")]
    mirror, row = paired[("sft", "sft_rewrite")], pol["sft_rewrite"]  # sft against the rewrite: its row, reversed
    assert (mirror["wins"], mirror["ties"], mirror["losses"]) == (row["losses"], row["ties"], row["wins"])
    assert mirror["win_rate"] == pytest.approx(1 - row["win_rate_vs_sft"])
    assert mirror["gold_diff"]["mean"] == pytest.approx(-row["gold_diff_vs_sft"]["mean"])
    assert mirror["sign_test_p"] == row["sign_test_p"] and mirror["ci95"] == pytest.approx(
        [1 - row["win_ci95"][1], 1 - row["win_ci95"][0]], abs=1e-9)
    c = paired[("best_of_2", "ppo")]
    assert c["gold_diff"]["mean"] == pytest.approx(pol["best_of_2"]["gold_score"] - pol["ppo"]["gold_score"])
    assert c["ci95"][0] <= c["win_rate"] <= c["ci95"][1] and c["wins"] + c["ties"] + c["losses"] == 240
    # the RM's report card: one accuracy per axis the eval prompts have controlled pairs for
    edits = [a for r in read(world / "prompts_eval.jsonl") for a in r.get("edits", {})]
    card = res["reward_model"]
    assert edits and set(card["axes"]) == set(edits) and all(0 <= v <= 1 for v in card["axes"].values())
    assert card["axes_pairs"] == {a: edits.count(a) for a in set(edits)}
    assert set(card["wrong_by_split"]) == {"held_out", "trained"}
    held = [a for r in read(world / "prompts_eval.jsonl") for a in r.get("edits_held_out", {})]  # (19)
    assert card["axes_held_out_pairs"] == ({a: held.count(a) for a in set(held)} if held else None)
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
    assert "paired comparisons" in proc.stdout and "gold - sft" in proc.stdout
    assert next(l for l in proc.stdout.splitlines() if l.startswith("sft_rewrite ")).split()[-2] == "-"  # its kl
    # the alignment tax for every row, measured once per set of weights
    tax = res["alignment_tax"]
    assert list(tax) == list(pol) and "alignment tax" in proc.stdout
    assert tax["gpt_prompted"] == {**tax["gpt"], "same_weights_as": "gpt"}
    assert tax["best_of_2"] == tax["sft_rewrite"] == {**tax["sft"], "same_weights_as": "sft"}
    for name in ("gpt", "sft", "ppo"):
        t = tax[name]
        assert t["same_weights_as"] is None and t["corpus_val_loss"] > 0 and t["corpus_val_tokens"] == 256 * 160
        assert t["cloze_items"]["all"] == t["cloze_items"]["held_out"] + t["cloze_items"]["trained"] > 0
        assert all(0 <= a <= 1 for a in t["cloze_accuracy"].values()) and t["cloze_chance"] == 1 / 8
    assert tax["gpt"]["corpus_val_loss"] == tax["sft"]["corpus_val_loss"] != tax["ppo"]["corpus_val_loss"]
    # (21) --combine reads this very results.json: here the same run twice, so each mean is the run's number
    (tmp_path / "again").mkdir()
    shutil.copy(out / "results.json", tmp_path / "again" / "results.json")
    run("evaluate.py", f"--combine={out},{tmp_path / 'again'}", f"--out_dir={tmp_path / 'both'}")
    both = json.load(open(tmp_path / "both" / "combined.json"))["policies"]
    assert list(both) == list(pol)
    assert both["ppo"]["gold_score"]["mean"] == pytest.approx(pol["ppo"]["gold_score"])
    assert both["ppo"]["gold_diff_vs_sft"]["per_seed"] == [pol["ppo"]["gold_diff_vs_sft"]["mean"]] * 2
    assert both["ppo"]["win_rate_vs_sft_rewrite"]["mean"] == pytest.approx(paired[("ppo", "sft_rewrite")]["win_rate"])


def test_a_second_run_of_a_method_is_paired_against_the_first(world, tmp_path):
    """(18) Two runs of one method (here the same weights twice, as two DPO runs) are compared on the same prompts:
    every prompt ties. A second SFT-stage run is not paired against SFT: its own columns already are."""
    sft, _ = tiny_checkpoints(tmp_path, dropout=0.0)
    ckpt = torch.load(sft / "ckpt.pt", weights_only=False)
    for d in ("dpo", "dpo_b"):
        save_checkpoint(tmp_path / d, {**ckpt, "stage": "dpo", "parent": str(sft)})
    save_checkpoint(tmp_path / "sft_b", ckpt)
    run("evaluate.py", f"--policies={sft},{tmp_path / 'dpo'},{tmp_path / 'dpo_b'},{tmp_path / 'sft_b'}",
        f"--data_dir={world}", "--max_new_tokens=4", "--best_of=0", "--t1_samples=1", "--few_shot=0",
        f"--labeler={world_labeler(tmp_path)}", f"--out_dir={tmp_path / 'eval'}")
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert list(res["policies"]) == ["sft", "sft_rewrite", "dpo", "dpo_b", "sft_b"]
    paired = {(c["a"], c["b"]): c for c in res["paired"]}
    assert ("sft_b", "sft") not in paired and paired[("dpo_b", "dpo")]["ties"] == 240
    assert paired[("dpo_b", "dpo")]["win_rate"] == 0.5 and paired[("dpo_b", "dpo")]["gold_diff"]["mean"] == 0.0


def test_a_labeler_without_rewrite_gives_no_sft_rewrite_row_and_held_out_forms_get_their_column(world, tmp_path):
    sft, rm = tiny_checkpoints(tmp_path, dropout=0.0)
    data = tmp_path / "data"
    shutil.copytree(world, data)
    records = read(data / "prompts_eval.jsonl")
    for r in records:  # (19) held-out forms on two axes, the world's own removed first (the world may have them)
        r.pop("edits_held_out", None)
        if r.get("edits"):
            r["edits_held_out"] = {"filler": "Well, my dear friend, " + r["ideal"], "curt": "Nope."}
    (data / "prompts_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    common = [f"--policies={sft}", f"--reward={rm}", "--max_new_tokens=4", "--best_of=0", "--t1_samples=1"]
    proc = run("evaluate.py", *common, f"--data_dir={data}", f"--out_dir={tmp_path / 'with'}",
               f"--labeler={world_labeler(tmp_path)}")
    res = json.load(open(tmp_path / "with" / "results.json"))
    assert list(res["policies"]) == ["sft", "sft_rewrite"]
    assert [(c["a"], c["b"]) for c in res["paired"]] == [("sft", "sft_rewrite")]
    card, n = res["reward_model"], sum(bool(r.get("edits")) for r in records)
    assert card["axes_held_out_pairs"] == {"filler": n, "curt": n} and set(card["axes_held_out"]) == {"filler", "curt"}
    assert "world forms" in proc.stdout and "held-out forms" in proc.stdout
    card_lines = proc.stdout.split("report card")[1].splitlines()
    line = next(l for l in card_lines if l.strip().startswith("filler"))
    assert line.count("pairs") == 2, line  # the two columns side by side
    line = next(l for l in card_lines if l.strip().startswith("curt"))
    assert line.endswith(f"({n} pairs)"), line  # an axis the world's edits may not have: its held-out column shows

    # no rewrite in the labeler: no row, no pairs, nothing else changes; no held-out forms: no column
    proc = run("evaluate.py", *common, f"--data_dir={world}", f"--out_dir={tmp_path / 'without'}",
               f"--labeler={world_labeler(tmp_path, rewrite=False)}")
    res2 = json.load(open(tmp_path / "without" / "results.json"))
    assert list(res2["policies"]) == ["sft"] and res2["paired"] == []
    assert res2["policies"]["sft"] == res["policies"]["sft"]
    if not any(r.get("edits_held_out") for r in read(world / "prompts_eval.jsonl")):
        assert res2["reward_model"]["axes_held_out"] is None and "held-out forms" not in proc.stdout


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
