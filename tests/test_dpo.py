"""DPO: the loss by hand, the log 2 start, response-only log-probs, and training through the command line."""
import json
import math

import pytest
import torch

from conftest import read, run
from common import setup
from dpo import (dpo_loss, group_loss, group_reference_logps, load_groups, load_pairs, pair_logps, reference_logps,
                 sequence_logps)
from model import GPT, GPTConfig
from test_reward import synthetic_comparisons
from tokenizer import get_tokenizer


def test_dpo_loss_by_hand():
    pc, pr = torch.tensor([-1.0, -4.0]), torch.tensor([-2.0, -3.0])
    rc, rr = torch.tensor([-1.5, -4.0]), torch.tensor([-1.5, -2.0])
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 1: beta * ((-1 + 1.5) - (-2 + 1.5)) = 0.5; pair 2: 0.5 * ((0) - (-1)) = 0.5
    by_hand = -math.log(1 / (1 + math.exp(-0.5)))
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert torch.allclose(chosen, torch.tensor([0.25, 0.0])) and torch.allclose(rejected, torch.tensor([-0.25, -0.5]))


def test_conservative_dpo_by_hand():
    """(2) Label smoothing eps: the loss of a pair is -(1 - eps) log sigmoid(h) - eps log sigmoid(-h), h the beta-scaled
    margin; eps = 0 is DPO; its gradient vanishes where sigmoid(h) = 1 - eps, not only at an infinite margin."""
    pc, pr, rc, rr = (torch.tensor([v], requires_grad=i == 0) for i, v in enumerate((-1.0, -3.0, -2.0, -2.0)))
    h = 0.5 * ((-1.0 + 2.0) - (-3.0 + 2.0))                                   # beta 0.5: h = 1
    sig = 1 / (1 + math.exp(-h))
    for eps in (0.0, 0.1, 0.3):
        loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=eps)
        assert loss.item() == pytest.approx(-(1 - eps) * math.log(sig) - eps * math.log(1 - sig), rel=1e-6)
        grad, = torch.autograd.grad(loss, pc)
        assert grad.item() == pytest.approx(-0.5 * ((1 - eps) - sig), rel=1e-5)   # dL/dh = sigmoid(h) - (1 - eps)


def test_every_prompt_weighs_the_same_whatever_its_number_of_pairs():
    """(1) InstructGPT's grouping: a batch's loss is the mean over prompts of the mean over each prompt's pairs, each
    distinct answer forwarded once; a prompt with one pair weighs as much as one with six."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64, dropout=0.0)).eval()
    rt = setup("cpu", "float32")
    many = ([[1, 2, 3], [1, 2, 4], [1, 2, 5], [1, 2, 6, 7]], [1, 1, 1, 2], [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3),
                                                                          (2, 3)])
    one = ([[8, 9, 10], [8, 9, 11]], [1, 1], [(1, 0)])
    groups = [many, one]
    refs = [r - 0.5 for r in group_reference_logps(model, groups, 0, rt)]     # a reference the policy is not
    loss, chosen, rejected = group_loss(model, groups, refs, 0, rt, beta=0.1, label_smoothing=0.0)
    per_prompt = []
    for seqs, lens, pairs in groups:
        flat = [(seqs[w], seqs[l], lens[w], lens[l]) for w, l in pairs]
        pc, pr = pair_logps(model, flat, 0, rt)
        ref = group_reference_logps(model, [(seqs, lens, pairs)], 0, rt)[0] - 0.5
        w, l = torch.tensor(pairs).T
        per_prompt.append(dpo_loss(pc, pr, ref[w], ref[l], beta=0.1)[0])
    assert loss.item() == pytest.approx((per_prompt[0].item() + per_prompt[1].item()) / 2, abs=1e-6)
    assert chosen.shape == rejected.shape == (7,)


def test_policy_equal_to_reference_gives_log_2_and_zero_margins(world):
    tok = get_tokenizer("bytes")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256, vocab_size=320, dropout=0.0)).eval()
    rt = setup("cpu", "float32")
    records = read(world / "prompts_label.jsonl")[:8]
    pairs = [(tok.render_prompt(r["messages"]) + tok.encode(r["ideal"]) + [tok.end_id],
              tok.render_prompt(r["messages"]) + tok.encode("No.") + [tok.end_id],
              len(tok.encode(r["ideal"])) + 1, 3) for r in records]
    ref = reference_logps(model, pairs, tok.pad_id, rt, batch_size=3)  # other batches, other padding
    pc, pr = pair_logps(model, pairs, tok.pad_id, rt)
    loss, chosen, rejected = dpo_loss(pc, pr, *ref, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # beta * (a sum of ~100 log-probs from differently padded batches): float noise reaches 3e-6 on the world's answers
    assert torch.allclose(chosen, torch.zeros(8), atol=1e-5) and torch.allclose(rejected, torch.zeros(8), atol=1e-5)


def test_sequence_logps_sum_over_the_answer_tokens_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64, dropout=0.0)).eval()
    rt = setup("cpu", "float32")
    seqs, lens = [[1, 2, 3, 4, 5, 6], [7, 8, 9]], [2, 1]  # answers: [5, 6] and [9]
    got = sequence_logps(model, seqs, lens, pad_id=0, rt=rt)
    for s, n, g in zip(seqs, lens, got):
        logp = torch.log_softmax(model(torch.tensor([s]))[0][0], -1)  # (T, V), unpadded
        by_hand = sum(logp[t - 1, s[t]].item() for t in range(len(s) - n, len(s)))
        assert g.item() == pytest.approx(by_hand, abs=1e-5)


def test_pairs_come_from_every_distinct_untied_pair(tmp_path, world):
    tok = get_tokenizer("bytes")
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}], "responses": ["a", "bb", "c", "d", "a", "d"], '
                    '"ranks": [0, 1, 1, 2, 0, 2]}\n')
    pairs = load_pairs(path, tok, 64)
    prompt = tok.render_prompt([{"role": "user", "content": "hi"}])
    got = [(tok.decode(w[len(prompt):-1]), tok.decode(l[len(prompt):-1])) for w, l, _, _ in pairs]
    # bb and c tie: no pair; "a" and "d" were sampled twice: a > d is one comparison, not four
    assert sorted(got) == [("a", "bb"), ("a", "c"), ("a", "d"), ("bb", "d"), ("c", "d")]
    assert all(w[-1] == tok.end_id and nw == len(w) - len(prompt) for w, _, nw, _ in pairs)
    (seqs, lens, index_pairs), = load_groups(path, tok, 64)  # the group: each distinct answer once
    assert [tok.decode(s[len(prompt):-1]) for s in seqs] == ["a", "bb", "c", "d"] and len(index_pairs) == 5


def test_dpo_through_the_command_line_learns_the_preferences(world, tiny_pt, tmp_path):
    pt = tiny_pt
    data = tmp_path / "data"
    synthetic_comparisons(world, data)
    out = tmp_path / "dpo"
    proc = run("dpo.py", f"--data_dir={data}", f"--init_from={pt}", f"--out_dir={out}", "--learning_rate=3e-3",
               "--batch_size=32", "--epochs=1", "--log_interval=5", "--warmup_iters=2")
    log = read(out / "log.jsonl")
    # policy = reference at step 0: every margin 0 up to float noise between differently padded batches
    assert abs(log[0]["val_accuracy"] - 0.5) < 0.05 and abs(log[0]["val_margin"]) < 1e-4
    assert log[-1]["val_accuracy"] > 0.8, log[-1]  # the implicit reward now ranks held-out pairs
    assert all(k in log[1] for k in ("loss", "margin", "accuracy", "chosen_reward", "rejected_reward"))
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "dpo" and ckpt["parent"] == str(pt) and "held-out preference accuracy" in proc.stdout


def test_a_label_smoothing_that_cannot_be_a_flip_chance_is_refused_in_one_sentence(tmp_path):
    for eps in ("0.5", "-0.1"):  # (2) 0.5 makes chosen and rejected alike: no preference is left to learn
        proc = run("dpo.py", f"--label_smoothing={eps}", f"--out_dir={tmp_path / 'dpo'}", check=False)
        assert proc.returncode == 1 and "[0, 0.5)" in proc.stderr and "\n" not in proc.stderr.strip()
        assert not (tmp_path / "dpo").exists()


def test_pairs_are_the_sampled_token_ids_when_the_comparison_has_them(tmp_path):
    """Decoding is lossy: a sampled <|user|> prints as its name, a lone byte 0xff as U+FFFD. Re-encoded, they are 8
    characters and 3 bytes the policy never produced; with sample.py's "response_ids" DPO trains on the tokens."""
    tok = get_tokenizer("bytes")
    messages = [{"role": "user", "content": "hi"}]
    sampled = [[tok.user_id, ord("x")], [0xFF, ord("y")]]
    texts = [tok.decode(ids) for ids in sampled]
    assert texts == ["<|user|>x", "\ufffdy"] and [tok.encode(t) for t in texts] != sampled
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"messages": messages, "responses": texts, "response_ids": sampled,
                                "finished": [True, False], "ranks": [0, 1]}) + "\n")
    (chosen, rejected, n_chosen, n_rejected), = load_pairs(path, tok, 64)
    prompt = tok.render_prompt(messages)
    assert chosen == prompt + sampled[0] + [tok.end_id] and n_chosen == 3   # finished: its <|end|> counts
    assert rejected == prompt + sampled[1] and n_rejected == 2              # cut by the length limit: no <|end|>
    # a comparison without ids (HH, a hand-written file) still trains on its text
    path.write_text(json.dumps({"messages": messages, "responses": texts, "ranks": [0, 1]}) + "\n")
    (chosen, _, n_chosen, _), = load_pairs(path, tok, 64)
    assert chosen == prompt + tok.encode(texts[0]) + [tok.end_id] and n_chosen == 10
    # ids that do not fit the responses stop the run at the line
    path.write_text(json.dumps({"messages": messages, "responses": texts, "response_ids": [[1]], "ranks": [0, 1]}))
    with pytest.raises(SystemExit, match=r"prefs.jsonl:1: .*response_ids"):
        load_pairs(path, tok, 64)


class Killed(Exception):
    pass


def test_dpo_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(world, tiny_pt, tmp_path, monkeypatch):
    data = tmp_path / "data"
    synthetic_comparisons(world, data)
    for name, n in (("prefs_train.jsonl", 64), ("prefs_val.jsonl", 16)):  # 64 prompts: 16 steps of 4, one epoch
        (data / name).write_text("".join(open(data / name).readlines()[:n]))
    common = ["dpo.py", f"--data_dir={data}", f"--init_from={tiny_pt}", "--batch_size=4", "--epochs=1",
              "--learning_rate=3e-3", "--warmup_iters=2", "--log_interval=1", "--ckpt_interval=4"]
    run(*common, f"--out_dir={tmp_path / 'full'}")

    # the same run killed during step 7: its last checkpoint is step 4's, mid-epoch (the only epoch)
    import common as common_module
    real_step, calls = common_module.clip_and_step, []

    def killed_at_step_7(*args):
        calls.append(1)
        if len(calls) == 7:
            raise Killed("kill -9 during step 7")
        return real_step(*args)
    monkeypatch.setattr(common_module, "clip_and_step", killed_at_step_7)  # dpo.py imports it from common
    proc = run(*common, f"--out_dir={tmp_path / 'cut'}", check=False)
    assert proc.returncode != 0 and "Killed" in proc.stderr
    assert torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=False)["step"] == 4
    monkeypatch.undo()

    run(*common, f"--out_dir={tmp_path / 'cut'}", "--resume")
    full, cut = (torch.load(tmp_path / d / "ckpt.pt", weights_only=False) for d in ("full", "cut"))
    assert full["step"] == cut["step"] > 8  # the kill came in the middle of the run's only epoch
    for k in full["model"]:
        assert torch.equal(full["model"][k], cut["model"][k]), k  # bit for bit
    for a, b in zip(full["optimizer"]["state"].values(), cut["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    full_log, cut_log = read(tmp_path / "full" / "log.jsonl"), read(tmp_path / "cut" / "log.jsonl")
    assert [l["step"] for l in cut_log] == [l["step"] for l in full_log] == [0, *range(1, full["step"] + 1),
                                                                             full["step"]]
    assert [l.get("loss") for l in cut_log] == [l.get("loss") for l in full_log]
