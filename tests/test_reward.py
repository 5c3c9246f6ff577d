"""The reward model: where the score is read, the K-way loss, the bias step, and training through the command line."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import run
from model import GPTConfig
from reward import RewardModel, batch_scores, kway_loss, load_reward_model, mean_demonstration_score, \
    pairwise_accuracy, load_comparisons, policy_samples, score_sequences
from common import load_checkpoint, model_from_checkpoint, setup
from tokenizer import get_tokenizer
from conftest import read


def test_score_is_read_at_the_last_real_token_whatever_the_padding():
    torch.manual_seed(0)
    rm = RewardModel(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)).eval()
    seqs = [[5, 9, 2, 7], [7, 1, 4, 4, 8, 3, 11, 2], [13, 6]]
    alone = torch.stack([rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs])
    T = max(map(len, seqs))
    right = torch.tensor([s + [0] * (T - len(s)) for s in seqs]), \
        torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    left = torch.tensor([[0] * (T - len(s)) + s for s in seqs]), \
        torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in seqs])
    assert torch.allclose(rm(*right), alone, atol=1e-5)
    assert torch.allclose(rm(*left), alone, atol=1e-5)
    # reading at the last position of the padded row (a pad) would give something else
    h = rm.gpt.hidden_states(*right)
    assert not torch.allclose(rm.head(h[:, -1]).squeeze(-1)[0], alone[0], atol=1e-3)


def test_batch_scores_in_two_length_sorted_halves_equal_one_padded_batch_with_the_same_gradient():
    torch.manual_seed(0)
    rm = RewardModel(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32))
    seqs = [[5, 9, 2, 7], [7, 1, 4, 4, 8, 3, 11, 2, 9, 9, 1], [13, 6], [3] * 20, [8, 2, 2]]
    T = max(map(len, seqs))
    idx = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    weights = torch.arange(1.0, 6.0)  # a loss that tells the answers apart, so a wrong order shows in the gradient
    one = rm(idx, mask)
    (one * weights).sum().backward()
    grads = [p.grad.clone() for p in rm.parameters()]
    rm.zero_grad()
    two = batch_scores(rm, seqs, 0, setup("cpu", "float32"))
    (two * weights).sum().backward()
    assert torch.allclose(two, one, atol=1e-5)
    for g, p in zip(grads, rm.parameters()):
        assert torch.allclose(p.grad, g, atol=1e-5)


def test_kway_loss_by_hand_with_a_tie_and_gradients_only_through_untied_pairs():
    scores = torch.tensor([2.0, 0.5, 1.0, -1.0], requires_grad=True)
    ranks = torch.tensor([0, 1, 1, 2])  # answers 1 and 2 tie: no pair between them
    loss, n = kway_loss(scores, ranks)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    by_hand = sum(-math.log(1 / (1 + math.exp(-(scores[w].item() - scores[l].item())))) for w, l in pairs) / 5
    assert n == 5 and loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    s = scores.detach()
    expected = torch.zeros(4)
    for w, l in pairs:  # d/dr_w of -log sigmoid(r_w - r_l) = -sigmoid(r_l - r_w)
        g = torch.sigmoid(s[l] - s[w]) / 5
        expected[w] -= g
        expected[l] += g
    assert torch.allclose(scores.grad, expected, atol=1e-6)
    # all tied: no pair, zero loss, zero gradient
    z = torch.tensor([1.0, 3.0], requires_grad=True)
    loss, n = kway_loss(z, torch.tensor([0, 0]))
    loss.backward()
    assert n == 0 and loss.item() == 0 and (z.grad == 0).all()


def synthetic_comparisons(world_dir, out_dir):
    """Ranked answers written for the test: ideal > padded with filler > wrong, ranked by the labeler. 400 labeling
    prompts to train on, the next 400 to validate on (the rest only made validation slow)."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "assistant"))
    import labeler
    os.makedirs(out_dir, exist_ok=True)
    recs = read(world_dir / "prompts_label.jsonl")
    for name, part in (("prefs_train", recs[:400]), ("prefs_val", recs[400:800])):
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w") as f:
            for r in part:
                responses = [r["ideal"], "Sure! " + r["ideal"] + " I hope this helps!", "No idea."]
                f.write(json.dumps({**r, "responses": responses, "ranks": labeler.rank(r, responses)}) + "\n")
    for name in ("sft_train.jsonl", "prompts_rl.jsonl", "meta.json"):
        (out_dir / name).write_text((world_dir / name).read_text())


def test_reward_training_through_the_command_line(world, tiny_pt, tmp_path):
    pt = tiny_pt
    data = tmp_path / "data"
    synthetic_comparisons(world, data)
    out = tmp_path / "rm"
    proc = run("reward.py", f"--data_dir={data}", f"--init_from={pt}", f"--out_dir={out}", "--learning_rate=3e-3",
               "--batch_prompts=8", "--epochs=2", "--dtype=float32")
    assert "held-out pairwise accuracy" in proc.stdout
    rm, ckpt = load_reward_model(out)
    assert ckpt["stage"] == "reward" and ckpt["parent"] == str(pt)
    rt = setup("cpu", "float32")
    tok = get_tokenizer("bytes")
    train = load_comparisons(data / "prefs_train.jsonl", tok, 160)
    acc, length_acc, pairs = pairwise_accuracy(rm, train, tok.pad_id, rt)
    assert pairs > 1000 and acc > 0.8, acc  # chance is 0.5
    assert ckpt["val_accuracy"] > 0.8 and 0 <= ckpt["length_baseline_accuracy"] <= 1
    # (4) the unit: the SFT policy's fresh answers (T = 1) to the first 256 RL prompts score with std 1, where PPO
    # samples; not the training answers, which the RM has fitted. Then the demonstrations' mean score is 0.
    policy = model_from_checkpoint(load_checkpoint(pt), dropout=0.0)
    samples = policy_samples(policy, tok, read(data / "prompts_rl.jsonl")[:256], 64, 1337, rt)
    assert len(samples) == 256 and all(len(s) <= 160 for s in samples)
    assert torch.tensor(score_sequences(rm, samples, tok.pad_id, rt)).std().item() == pytest.approx(1.0, abs=1e-3)
    in_sample = torch.tensor(score_sequences(rm, [s for seqs, _, _ in train for s in seqs], tok.pad_id, rt)).std()
    assert abs(in_sample.item() - 1.0) > 0.01 and ckpt["gain"] > 0, in_sample
    assert abs(mean_demonstration_score(rm, tok, data / "sft_train.jsonl", rt, 160)) < 1e-4
    # evaluate.py adds RM scores, and compares RM and gold on samples of the SFT policy
    sft = tmp_path / "sft"
    run("sft.py", f"--data_dir={world}", f"--init_from={pt}", f"--out_dir={sft}", "--epochs=0.1", "--batch_size=200",
        "--grad_accum=1")
    proc = run("evaluate.py", f"--policies={pt},{sft}", f"--data_dir={world}", f"--reward={out}",
               "--max_new_tokens=8", "--best_of=3", f"--out_dir={tmp_path / 'eval'}")
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert res["reward_model"]["val_accuracy"] == ckpt["val_accuracy"]
    assert isinstance(res["policies"]["gpt"]["rm_score"], float)
    assert -1 <= res["reward_model"]["spearman_within_prompt"] <= 1 and "Spearman(RM, gold)" in proc.stdout
    assert res["reward_model"]["samples_per_prompt"] == 3 and [c["n"] for c in res["best_of_n"]] == [1, 2, 3]


def test_sampled_answers_are_labeled_into_comparisons(world, tiny_pt, tmp_path):
    pt = tiny_pt
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(line for line in (world / "prompts_label.jsonl").open().readlines()[:30]))
    run("sample.py", f"--ckpt={pt}", f"--prompts={prompts}", "--num_samples=3", "--temperature=1",
        "--max_new_tokens=8", f"--out={tmp_path / 's.jsonl'}")
    samples = read(tmp_path / "s.jsonl")
    assert len(samples) == 30 and all(len(s["responses"]) == 3 == len(s["finished"]) for s in samples)
    # a repeated answer is ranked once: an answer list with a copy keeps the first
    samples[0]["responses"] = [samples[0]["ideal"], samples[0]["ideal"], "wrong"]
    del samples[0]["response_ids"]  # edited answers: the sampled ids no longer match them
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    # a second policy's answers to the same prompts join each prompt's list (InstructGPT: several models)
    run("sample.py", f"--ckpt={pt}", f"--prompts={prompts}", "--few_shot=2", f"--demos={world / 'sft_train.jsonl'}",
        "--temperature=1", "--max_new_tokens=8", f"--out={tmp_path / 'g.jsonl'}")
    files = f"--samples={tmp_path / 's.jsonl'},{tmp_path / 'g.jsonl'}"
    proc = run("data/assistant/label.py", files, f"--out_dir={tmp_path}", "--noise=0")
    assert "labeler's mean score of the answers" in proc.stdout
    labeled = [r for r in read(tmp_path / "prefs_train.jsonl") + read(tmp_path / "prefs_val.jsonl")
               if not r.get("refiled")]  # a one-turn prompt's comparison again in a conversation: test_assistant's
    first = next(r for r in labeled if r["messages"] == samples[0]["messages"])
    assert first["responses"][:2] == [samples[0]["ideal"], "wrong"] and first["ranks"][0] < first["ranks"][1]
    assert first["sources"][:2] == [str(tmp_path / "s.jsonl")] * 2 and "response_ids" not in first
    for r in labeled:  # each distinct answer once, its source beside it: the 3 sampled ones, then the other policy's
        sampled = next(s for s in samples if s["messages"] == r["messages"])
        distinct = list(dict.fromkeys(map(json.dumps, sampled.get("response_ids", sampled["responses"]))))
        assert len(set(r["ranks"])) > 1 and len(r["ranks"]) == len(r["responses"]) == len(r["sources"])
        assert r["sources"][:len(distinct)] == [str(tmp_path / "s.jsonl")] * len(distinct)
        assert set(r["sources"][len(distinct):]) <= {str(tmp_path / "g.jsonl")}
    tok = get_tokenizer("bytes")
    assert all([tok.decode(ids) for ids in r["response_ids"]] == r["responses"] for r in labeled if r is not first)
    # files that do not answer the same prompts line for line stop the labeling, naming the place
    (tmp_path / "g.jsonl").write_text("".join((tmp_path / "g.jsonl").open().readlines()[1:]))
    proc = run("data/assistant/label.py", files, f"--out_dir={tmp_path / 'none'}", check=False)
    assert proc.returncode != 0 and "g.jsonl:1: not the prompt of" in proc.stderr and not (tmp_path / "none").exists()


BAD_COMPARISONS = [
    ({"responses": ["a"], "ranks": [0]}, "at least 2 strings"),
    ({"responses": ["a", "b"], "ranks": [0]}, "one integer per response"),
    ({"responses": ["a", "b"], "ranks": [1, 1]}, "all responses are tied"),
]


def test_bad_comparisons_name_file_and_line_and_write_nothing(world, tiny_pt, tmp_path):
    data = tmp_path / "data"
    synthetic_comparisons(world, data)
    lines = (data / "prefs_train.jsonl").read_text().splitlines()
    for i, (record, message) in enumerate(BAD_COMPARISONS):  # what reward.py and dpo.py read their data with
        bad = {"messages": [{"role": "user", "content": "hi"}], **record}
        (tmp_path / f"bad{i}.jsonl").write_text("\n".join(lines[:4] + [json.dumps(bad)] + lines[4:]) + "\n")
        with pytest.raises(SystemExit, match=f"bad{i}.jsonl:5: .*{message}"):
            load_comparisons(tmp_path / f"bad{i}.jsonl", get_tokenizer("bytes"), 160)
    # through the script: it stops before writing anything
    os.replace(tmp_path / "bad0.jsonl", data / "prefs_train.jsonl")
    proc = run("reward.py", f"--data_dir={data}", f"--init_from={tiny_pt}", f"--out_dir={tmp_path / 'rm'}",
               check=False)
    assert proc.returncode != 0 and "prefs_train.jsonl:5: " in proc.stderr and BAD_COMPARISONS[0][1] in proc.stderr
    assert not (tmp_path / "rm").exists()


def test_the_rm_trains_on_the_sampled_token_ids_and_refuses_ids_that_are_not_the_answers(tmp_path):
    """A sampled <|user|> decodes to its name and a lone byte to U+FFFD: re-encoded they are tokens the policy never
    produced. The RM scores the sampled ids (the sequences PPO will ask it to score)."""
    tok = get_tokenizer("bytes")
    messages = [{"role": "user", "content": "hi"}]
    sampled = [[tok.user_id, ord("x")], [0xFF, ord("y")]]
    texts = [tok.decode(ids) for ids in sampled]
    path = tmp_path / "prefs.jsonl"
    record = {"messages": messages, "responses": texts, "response_ids": sampled, "finished": [True, False],
              "ranks": [0, 1]}
    path.write_text(json.dumps(record) + "\n")
    (seqs, ranks, _), = load_comparisons(path, tok, 64)
    prompt = tok.render_prompt(messages)
    assert seqs == [prompt + sampled[0] + [tok.end_id], prompt + sampled[1]] and ranks.tolist() == [0, 1]
    # answers edited after sampling no longer match their ids: the line is named, nothing is guessed
    path.write_text(json.dumps({**record, "responses": ["edited", texts[1]]}) + "\n")
    with pytest.raises(SystemExit, match=r"prefs.jsonl:1: .*do not decode"):
        load_comparisons(path, tok, 64)


def test_a_language_model_is_not_a_reward_model(tmp_path):
    torch.save({"stage": "sft", "model": {}, "tokenizer": "bytes"}, tmp_path / "ckpt.pt")
    with pytest.raises(SystemExit, match="is a 'sft' checkpoint, but a reward checkpoint is needed"):
        load_reward_model(tmp_path)


def test_best_of_n_returns_the_rm_favourite_and_n_1_is_plain_sampling(world, tmp_path):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_ppo import tiny_checkpoints
    from reward import best_of_n, score_sequences
    from common import model_from_checkpoint
    sft, rm_path = tiny_checkpoints(tmp_path, dropout=0.0)
    rm, _ = load_reward_model(rm_path)
    policy = model_from_checkpoint(torch.load(sft / "ckpt.pt", weights_only=False), dropout=0.0).eval()
    tok, rt = get_tokenizer("bytes"), setup("cpu", "float32")
    prompts = [tok.render_prompt(r["messages"]) for r in read(world / "prompts_eval.jsonl")[:3]]
    picks = best_of_n(policy, rm, prompts, 5, tok.pad_id, tok.end_id, rt, 6,
                      generator=torch.Generator().manual_seed(0))
    for p, (ids, fin, score, cands) in zip(prompts, picks):
        assert len(cands) == 5 and len({tuple(c[0]) for c in cands}) > 1  # five different samples
        block = rm.gpt.config.block_size  # a long conversation keeps its last tokens, as best_of_n scores it
        rescored = score_sequences(rm, [(p + c[0] + [tok.end_id] * c[1])[-block:] for c in cands], tok.pad_id, rt)
        assert score == max(c[2] for c in cands) == pytest.approx(max(rescored), abs=1e-5)
        assert (ids, fin) == max(cands, key=lambda c: c[2])[:2]
    # through sample.py: --best_of=1 gives the same answers as plain sampling with the same seed
    prompts_file = tmp_path / "p.jsonl"
    prompts_file.write_text("".join(json.dumps(r) + "\n" for r in read(world / "prompts_eval.jsonl")[:4]))
    common = ["sample.py", f"--ckpt={sft}", f"--prompts={prompts_file}", "--num_samples=2", "--temperature=1",
              "--max_new_tokens=8", "--seed=3"]
    run(*common, f"--out={tmp_path / 'plain.jsonl'}")
    run(*common, "--best_of=1", f"--reward={rm_path}", f"--out={tmp_path / 'bo1.jsonl'}")
    run(*common, "--best_of=4", f"--reward={rm_path}", f"--out={tmp_path / 'bo4.jsonl'}")
    plain, bo1, bo4 = (read(tmp_path / f) for f in ("plain.jsonl", "bo1.jsonl", "bo4.jsonl"))
    assert [r["responses"] for r in plain] == [r["responses"] for r in bo1]
    mean = lambda recs: sum(s for r in recs for s in r["rm_scores"]) / sum(len(r["rm_scores"]) for r in recs)
    assert mean(bo4) > mean(bo1)  # the favourite of 4 scores higher than a single draw, on average
    proc = run("sample.py", f"--ckpt={sft}", "--best_of=3", check=False)
    assert proc.returncode != 0 and "--reward" in proc.stderr
