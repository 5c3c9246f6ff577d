"""The real-data recipe offline: HH-RLHF's format, GPT-2's layout in and out, and every stage on a tiny GPT-2."""
import gzip
import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from common import load_checkpoint
from conftest import ROOT, SHARED, read, run
from model import GPT, GPTConfig

# by path: tests/test_assistant.py imports data/assistant's prepare.py under the name "prepare"
_spec = importlib.util.spec_from_file_location("hh_prepare", os.path.join(ROOT, "data", "hh_rlhf", "prepare.py"))
hh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hh)

GPT2_ENV = {"GPT2_TIKTOKEN": os.path.join(SHARED, "tokenizers", "gpt2.tiktoken")}


def t(*turns):
    """An HH transcript from alternating turns, Human first."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {x}" for i, x in enumerate(turns))


GOOD = [  # (chosen, rejected)
    (t("What is a good name for a cat?", "Whiskers is a classic."), t("What is a good name for a cat?", "No.")),
    (t("Hi", "Hello! How can I help?", "Tell me a joke.", "Why did the cat sit on the laptop? To keep an eye on "
       "the mouse."), t("Hi", "Hello! How can I help?", "Tell me a joke.", "Jokes are bad.")),
]
EDGE = [  # (chosen, rejected, the reason it is dropped)
    (t("Say hi", "Hi!"), t("Say hi", "Hi!"), "identical answers"),
    ("\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "\n\nHuman: a\n\nHuman: b\n\nAssistant: d",
     "turns do not alternate Human / Assistant"),
    (t("Say hi", "Hi!"), t("Say hi", " "), "empty turn"),
    (t("Only a question"), t("Only a question"), "no assistant turn"),
    (t("Say hi", "Hi!"), t("Say hello", "Hello!"), "chosen and rejected differ before the final answer"),
]


def write_hh(path, pairs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for chosen, rejected in pairs:
            f.write(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n")


def synthetic_hh(root, n_train=16, n_test=4):
    """A directory laid out like the HH repository: helpful-base/ and harmless-base/, train and test each."""
    topics = ["cats", "tea", "rain", "maps", "bread", "chess", "boats", "clocks", "bees", "kites", "salt", "snow"]
    for subset in ("helpful-base", "harmless-base"):
        for split, n in (("train", n_train), ("test", n_test)):
            pairs = []
            for i in range(n):
                q = f"Tell me one fact about {topics[i % len(topics)]} ({subset} {split} {i})."
                pairs.append((t(q, f"Here is a fact about {topics[i % len(topics)]}: they are interesting."),
                              t(q, "I will not.")))
            write_hh(os.path.join(root, subset, f"{split}.jsonl.gz"), pairs + [EDGE[i % len(EDGE)][:2] for i in
                                                                               range(2)])
    return root


def test_hh_transcripts_become_messages_comparisons_and_counted_drops(tmp_path):
    write_hh(tmp_path / "src" / "helpful-base" / "train.jsonl.gz", GOOD + [e[:2] for e in EDGE])
    write_hh(tmp_path / "src" / "helpful-base" / "test.jsonl.gz", GOOD[:1])
    write_hh(tmp_path / "src" / "helpful-online" / "train.jsonl.gz", GOOD)  # a subset not asked for
    (tmp_path / "src" / "red-team-attempts").mkdir()  # as in the HH repository: not comparisons, not read
    (tmp_path / "src" / "red-team-attempts" / "red_team_attempts.jsonl.gz").write_bytes(b"not read")
    proc = run("data/hh_rlhf/prepare.py", f"--source={tmp_path / 'src'}", f"--out_dir={tmp_path / 'out'}")
    prefs, sft, prompts = (read(tmp_path / "out" / f) for f in ("prefs_train.jsonl", "sft_train.jsonl",
                                                                 "prompts_rl.jsonl"))
    assert len(prefs) == len(sft) == len(prompts) == 2
    multi = prefs[1]  # the multi-turn record: the shared conversation is the prompt, the final answers compared
    assert [m["role"] for m in multi["messages"]] == ["user", "assistant", "user"]
    assert multi["messages"][1]["content"] == "Hello! How can I help?"
    assert multi["responses"] == ["Why did the cat sit on the laptop? To keep an eye on the mouse.", "Jokes are bad."]
    assert multi["ranks"] == [0, 1]
    assert sft[1]["messages"] == multi["messages"] + [{"role": "assistant", "content": multi["responses"][0]}]
    assert {"messages": [{"role": "user", "content": "What is a good name for a cat?"}], "family": "helpful"} in prompts
    # every comparison's prompt once, in a seeded random order (reward.py's unit is set on the first ones)
    assert sorted(json.dumps(p) for p in prompts) == sorted(json.dumps({"messages": r["messages"],
                                                                        "family": "helpful"}) for r in prefs)
    meta = json.load(open(tmp_path / "out" / "meta.json"))
    assert meta["tokenizer"] == "gpt2"
    assert meta["dropped"]["train"] == {reason: 1 for _, _, reason in EDGE}
    assert "7 records read, 2 kept, 5 dropped" in proc.stdout
    for _, _, reason in EDGE:  # each reason is reported with where it first occurred
        assert f"dropped 1: {reason} (first at {tmp_path / 'src' / 'helpful-base' / 'train.jsonl.gz'}:" in proc.stdout


def test_bad_hh_input_says_what_is_wrong_in_one_sentence_and_writes_nothing(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_hh(src / "train.jsonl.gz", GOOD * 50)
    write_hh(src / "test.jsonl.gz", GOOD)
    data = (src / "train.jsonl.gz").read_bytes()
    (src / "train.jsonl.gz").write_bytes(data[:len(data) // 2])  # a download cut short
    out = tmp_path / "out"
    proc = run("data/hh_rlhf/prepare.py", f"--source={src}", f"--out_dir={out}", check=False)
    assert proc.returncode != 0 and "train.jsonl.gz is not a readable .jsonl.gz" in proc.stderr
    assert not out.exists()
    with gzip.open(src / "train.jsonl.gz", "wt") as f:  # a line that is not a record
        f.write(json.dumps({"chosen": GOOD[0][0], "rejected": GOOD[0][1]}) + "\n" + '{"chosen": "x"\n')
    proc = run("data/hh_rlhf/prepare.py", f"--source={src}", f"--out_dir={out}", check=False)
    assert proc.returncode != 0 and "train.jsonl.gz:2: not a JSON object" in proc.stderr
    assert not out.exists()
    with gzip.open(src / "train.jsonl.gz", "wt") as f:  # only transcripts with no assistant turn
        f.write(json.dumps({"chosen": t("hi"), "rejected": t("hi")}) + "\n")
    proc = run("data/hh_rlhf/prepare.py", f"--source={src}", f"--out_dir={out}", check=False)
    assert proc.returncode != 0 and "dropped 1: no assistant turn" in proc.stdout and not out.exists()

    def unreachable(url, path):
        raise OSError("Temporary failure in name resolution")
    monkeypatch.setattr(hh.urllib.request, "urlretrieve", unreachable)
    with pytest.raises(SystemExit, match="could not download .*--source= takes a local copy"):
        hh.download("helpful-base", "train", str(tmp_path / "raw"))
    assert not (tmp_path / "raw" / "helpful-base" / "train.jsonl.gz").exists()


@pytest.mark.parametrize("bias", [True, False])
def test_export_round_trips_through_from_pretrained_exactly(tmp_path, bias):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=320, n_layer=2, n_head=2, n_embd=32, bias=bias)).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a tensor lost on the way shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(tmp_path))
    assert json.load(open(tmp_path / "config.json"))["activation_function"] == "gelu_new"
    back = GPT.from_pretrained(str(tmp_path)).eval()
    assert back.config.vocab_size == 320 and back.config.block_size == 32
    x = torch.randint(0, 320, (2, 32))
    assert torch.equal(model(x)[0], back(x)[0])


def test_export_script_writes_what_a_server_needs(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=320, n_layer=1, n_head=2, n_embd=16))
    torch.save({"model": model.state_dict(), "model_args": model.config.__dict__, "tokenizer": "bytes",
                "stage": "sft", "parent": None}, tmp_path / "ckpt.pt")
    run("export.py", f"--ckpt={tmp_path}", f"--out_dir={tmp_path / 'hf'}")
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["tokenizer"] == "bytes" and config["stage"] == "sft"
    assert config["eos_token_id"] == config["special_tokens"]["<|end|>"] == 260
    ckpt = load_checkpoint(tmp_path / "hf", stages=("pretrain",), tokenizer="bytes")  # any stage can start from it
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    model.save_pretrained(str(tmp_path))  # an export beside a run's ckpt.pt: the run's checkpoint still comes first
    assert load_checkpoint(tmp_path)["stage"] == "sft"
    proc = run("export.py", f"--ckpt={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode != 0 and "no checkpoint at" in proc.stderr


def test_hh_recipe_runs_every_stage_from_a_tiny_gpt2(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2_TIKTOKEN", GPT2_ENV["GPT2_TIKTOKEN"])
    data = tmp_path / "hh"
    run("data/hh_rlhf/prepare.py", f"--source={synthetic_hh(tmp_path / 'src')}", f"--out_dir={data}")
    torch.manual_seed(0)  # a GPT-2-layout model as from_pretrained would find it on the hub, only tiny
    GPT(GPTConfig(block_size=128, vocab_size=50257, n_layer=2, n_head=2, n_embd=32)).save_pretrained(
        str(tmp_path / "gpt2"))
    common = ["--compile=false", f"--data_dir={data}"]
    # pretrain.py continues from the same weights: with lr 0 they come out exactly as they went in
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "val"):
        np.random.default_rng(0).integers(0, 50257, 4096, dtype=np.uint16).tofile(corpus / f"{split}.bin")
    (corpus / "meta.json").write_text(json.dumps({"tokenizer": "gpt2", "vocab_size": 50304}))
    run("pretrain.py", f"--init_from={tmp_path / 'gpt2'}", f"--data_dir={corpus}", f"--out_dir={tmp_path / 'pt'}",
        "--block_size=32", "--batch_size=2", "--max_iters=2", "--eval_iters=1", "--learning_rate=0", "--min_lr=0")
    pt = load_checkpoint(tmp_path / "pt", stages=("pretrain",), tokenizer="gpt2")
    hf = GPT.from_pretrained(str(tmp_path / "gpt2")).state_dict()
    assert pt["parent"] == str(tmp_path / "gpt2") and all(torch.equal(hf[k], v) for k, v in pt["model"].items())
    run("sft.py", "--config=config/hh_sft.json", f"--init_from={tmp_path / 'gpt2'}", f"--out_dir={tmp_path / 'sft'}",
        "--batch_size=8", "--grad_accum=1", "--learning_rate=1e-3", "--warmup_iters=2", *common)
    sft = load_checkpoint(tmp_path / "sft", stages=("sft",), tokenizer="gpt2")
    assert sft["parent"] == str(tmp_path / "gpt2") and sft["model_args"]["vocab_size"] == 50304
    assert sft["val_loss"] < json.loads(open(tmp_path / "sft" / "log.jsonl").readline())["val_loss"]
    proc = run("reward.py", "--config=config/hh_reward.json", f"--init_from={tmp_path / 'sft'}",
               f"--out_dir={tmp_path / 'rm'}", "--batch_prompts=8", "--learning_rate=1e-3", "--warmup_iters=2",
               "--norm_max_new_tokens=8", *common)  # PPO's --max_new_tokens below: the RM's unit is set there
    assert "held-out pairwise accuracy" in proc.stdout
    proc = run("ppo.py", "--config=config/hh_ppo.json", f"--init_from={tmp_path / 'sft'}",
               f"--reward={tmp_path / 'rm'}", f"--out_dir={tmp_path / 'ppo'}", "--max_iters=2", "--batch_size=4",
               "--minibatch_size=2", "--max_new_tokens=8", *common)
    assert "step 2/2" in proc.stdout
    run("dpo.py", "--config=config/hh_dpo.json", f"--init_from={tmp_path / 'sft'}", f"--out_dir={tmp_path / 'dpo'}",
        "--batch_size=8", *common)
    for stage in ("ppo", "dpo"):
        ckpt = load_checkpoint(tmp_path / stage, stages=(stage,), tokenizer="gpt2")
        assert ckpt["parent"] == str(tmp_path / "sft")
    run("export.py", f"--ckpt={tmp_path / 'ppo'}", f"--out_dir={tmp_path / 'ppo_hf'}")
    assert json.load(open(tmp_path / "ppo_hf" / "config.json"))["vocab_size"] == 50304
