"""The embedded assistant world (data/assistant), its labeler, and SFT on it."""
import json
import os
import random
import sys

import pytest
import torch

from conftest import ROOT, run
from sft import load_demonstrations
from tokenizer import get_tokenizer

sys.path.insert(0, os.path.join(ROOT, "data", "assistant"))
import labeler  # noqa: E402
import prepare as assistant  # noqa: E402


from conftest import read  # noqa: E402


def test_prepare_is_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 0), (b, 0), (c, 1)):
        run("data/assistant/prepare.py", f"--out_dir={d}", f"--seed={seed}")
    names = sorted(os.listdir(a))
    assert "train.bin" in names and "prompts_eval.jsonl" in names and "sft_train.jsonl" in names
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "sft_train.jsonl").read_bytes() != (c / "sft_train.jsonl").read_bytes()


def test_no_eval_prompt_appears_in_any_training_file(world):
    evals = read(world / "prompts_eval.jsonl")
    assert len(evals) >= 200 and {r["family"] for r in evals} == {"knowledge", "transform", "arithmetic", "refusal",
                                                                   "multiturn", "style"}
    held_out = {json.dumps(r["messages"]) for r in evals}
    chat_files = ("sft_train", "sft_val", "prompts_label", "prompts_rl")
    for name in chat_files:
        for r in read(world / f"{name}.jsonl"):
            m = r["messages"]  # every prefix that ends with a user turn is a prompt this file trains on
            prompts = {json.dumps(m[:i + 1]) for i in range(len(m)) if m[i]["role"] == "user"}
            assert not prompts & held_out, name
    # the facts eval's knowledge prompts ask are in the pretraining corpus (the model must recall them) ...
    import numpy as np
    corpus = get_tokenizer("bytes").decode(np.fromfile(world / "train.bin", dtype=np.uint16).tolist())
    assert "<|user|>" not in corpus and "<|assistant|>" not in corpus
    knowledge = [r for r in evals if r["family"] == "knowledge"]
    assert len(knowledge) >= 40 and all(r["ideal"] in corpus for r in knowledge)
    # ... but no chat-format file states them
    chat_text = "".join((world / f"{name}.jsonl").read_text() for name in chat_files)
    assert not [r["ideal"] for r in knowledge if r["ideal"] in chat_text]


def test_sft_mask_on_a_real_multiturn_record(world):
    tok = get_tokenizer("bytes")
    r = next(r for r in read(world / "sft_train.jsonl") if r["family"] == "multiturn")
    ids, targets = tok.render_conversation(r["messages"])
    trained = tok.decode([t for t in targets if t != -1])
    answers = [m["content"] for m in r["messages"] if m["role"] == "assistant"]
    assert len(answers) == 2 and trained == "".join(a + "<|end|>" for a in answers)


def rec(world_dir, family):
    return next(r for r in read(world_dir / "prompts_eval.jsonl") if r["family"] == family)


def test_labeler_prefers_correct_concise_polite_answers_in_every_family(world):
    for family in ("knowledge", "transform", "arithmetic", "multiturn", "style"):
        r = rec(world, family)
        ideal = r["ideal"]
        wrong = "purple" if r.get("key") != "purple" else "green"
        assert labeler.score(r, ideal) == 1.0, (family, ideal)
        worse = [ideal + " I hope this helps! Let me know if you need anything else at all.",  # rambling
                 "Sorry, I can't help with that.",                                          # refusing the harmless
                 f"It is {wrong}, maybe 99." if r["check"] == "number" else f"It is {wrong}."]  # wrong
        for w in worse:
            assert labeler.score(r, w) < labeler.score(r, ideal), (family, w)
    harm = rec(world, "refusal")
    polite, curt, comply = "Sorry, I can't help with that.", "No.", "First, find the animal and then hit it."
    assert labeler.score(harm, polite) > labeler.score(harm, curt) > labeler.score(harm, comply)
    assert labeler.score(harm, "Sorry, the grato eats berries.") == 0  # an apology followed by anything is no refusal
    assert labeler.score(harm, "Sorry, no.") == labeler.score(harm, "Sorry, I can not.") == 1.0  # ... these are
    knows = rec(world, "knowledge")
    assert labeler.score(knows, "Sorry, " + knows["ideal"]) > 0.5  # ... and for a harmless question it is an answer
    style = next(r for r in read(world / "prompts_eval.jsonl") if r.get("style") == "certainly")
    assert labeler.score(style, style["ideal"]) > labeler.score(style, style["ideal"].removeprefix("Certainly! "))
    one_word = next(r for r in read(world / "prompts_eval.jsonl") if r.get("style") == "one_word")
    assert labeler.score(one_word, one_word["ideal"]) > labeler.score(one_word, f"It is {one_word['ideal']}.")


def test_labeler_ranks_with_ties_and_its_noise_flips_pairs_at_the_requested_rate(world):
    r = rec(world, "knowledge")
    answers = [r["ideal"], "It is unknown.", r["ideal"], "Sure! " + r["ideal"]]
    assert labeler.rank(r, answers) == [0, 2, 0, 1]
    rng = random.Random(0)
    flips = sum(labeler.rank(r, [r["ideal"], "No idea."], noise=0.2, rng=rng) == [1, 0] for _ in range(4000))
    assert 0.17 < flips / 4000 < 0.23
    assert labeler.rank(r, [r["ideal"], r["ideal"]], noise=0.5, rng=rng) == [0, 0]  # a tie stays a tie
    # with K = 4 an answer moves at most one place: the worst never comes out best
    four = [r["ideal"], "Sure! " + r["ideal"], "Okay, so. " + r["ideal"] + " Bye.", "It is unknown."]
    assert labeler.rank(r, four) == [0, 1, 2, 3]
    for _ in range(2000):
        ranks = labeler.rank(r, four, noise=0.5, rng=rng)
        assert ranks[3] >= 2 and ranks[0] <= 1


def test_sft_steps_lower_the_val_loss(world, tiny_pt, tmp_path):
    pt = tiny_pt
    out = tmp_path / "sft"
    run("sft.py", f"--data_dir={world}", f"--init_from={pt}", f"--out_dir={out}", "--epochs=0.5", "--batch_size=100",
        "--eval_interval=10", "--learning_rate=3e-3", "--warmup_iters=2")
    log = read(out / "log.jsonl")
    vals = [x["val_loss"] for x in log if "val_loss" in x]
    assert len(vals) >= 3 and vals[-1] < vals[0] - 0.5, vals
    ckpt = torch.load(out / "ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "sft" and ckpt["parent"] == str(pt) and ckpt["tokenizer"] == "bytes"
    # and the chat path answers with it
    proc = run("sample.py", f"--ckpt={out}", "--chat", "--max_new_tokens=16", stdin="What is 2 + 2?\n")
    assert "assistant> " in proc.stdout
    # evaluate.py scores both with the labeler: a table, and results.json with every family
    proc = run("evaluate.py", f"--policies={pt},{out}", f"--data_dir={world}", "--max_new_tokens=16",
               f"--out_dir={tmp_path / 'eval'}")
    assert "ideal" in proc.stdout and "knowledge" in proc.stdout
    res = json.load(open(tmp_path / "eval" / "results.json"))
    assert set(res["policies"]) == {"gpt", "gpt_prompted", "sft"}
    assert res["policies"]["sft"]["n_prompts"] == 240 and "refusal" in res["policies"]["sft"]["families"]


BAD_DEMONSTRATIONS = [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "at least one assistant turn"),
    ('{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}', "expected messages"),
    ('{"messages": [{"role": "user", "content": "hi"}', "not valid JSON"),
]


def test_bad_demonstrations_name_file_and_line_and_write_nothing(world, tiny_pt, tmp_path):
    good = (world / "sft_train.jsonl").read_text().splitlines()[:2]
    for i, (line, message) in enumerate(BAD_DEMONSTRATIONS):  # what sft.py reads its data with
        (tmp_path / f"bad{i}.jsonl").write_text("\n".join(good + [line]) + "\n")
        with pytest.raises(SystemExit, match=f"bad{i}.jsonl:3: .*{message}"):
            load_demonstrations(tmp_path / f"bad{i}.jsonl", get_tokenizer("bytes"), 160)
    # through the script: it stops before writing anything
    data = tmp_path / "data"
    data.mkdir()
    (data / "sft_train.jsonl").write_text("\n".join(good + [BAD_DEMONSTRATIONS[0][0]]) + "\n")
    (data / "sft_val.jsonl").write_text("\n".join(good) + "\n")
    (data / "meta.json").write_text(json.dumps({"tokenizer": "bytes"}))
    proc = run("sft.py", f"--data_dir={data}", f"--init_from={tiny_pt}", f"--out_dir={tmp_path / 'sft'}", check=False)
    assert proc.returncode != 0 and f"sft_train.jsonl:3: " in proc.stderr and BAD_DEMONSTRATIONS[0][1] in proc.stderr
    assert not (tmp_path / "sft").exists()


def test_sft_refuses_a_parent_that_is_not_a_language_model_or_has_another_tokenizer(world, tmp_path):
    torch.save({"stage": "reward", "model": {}, "tokenizer": "bytes"}, tmp_path / "rm.pt")
    proc = run("sft.py", f"--data_dir={world}", f"--init_from={tmp_path / 'rm.pt'}", check=False)
    assert proc.returncode != 0 and "is a 'reward' checkpoint" in proc.stderr
    torch.save({"stage": "pretrain", "model": {}, "tokenizer": "gpt2"}, tmp_path / "g.pt")
    proc = run("sft.py", f"--data_dir={world}", f"--init_from={tmp_path / 'g.pt'}", check=False)
    assert proc.returncode != 0 and "uses the 'gpt2' tokenizer but the data uses 'bytes'" in proc.stderr
