"""sample.py --prompts: the answers that become comparisons fit the checkpoint's context with the default length, and
carry the tokens the model sampled, not only their lossy decoding."""
import json

import torch

from common import generate_batched, load_checkpoint, model_from_checkpoint, setup
from conftest import read, run
from tokenizer import get_tokenizer


def prompts_file(world, path, n):
    """The first n one-turn labeling prompts (a conversation may be longer than the tiny model's context)."""
    lines = [line for line in open(world / "prompts_label.jsonl") if json.loads(line)["turn"] == 1]
    path.write_text("".join(lines[:n]))
    return path


def test_prompts_with_the_default_max_new_tokens_fit_the_context(world, tiny_pt, tmp_path):
    # the default --max_new_tokens=0 is what the context allows: a quarter of it for answers to --prompts, no warning
    prompts, out = prompts_file(world, tmp_path / "p.jsonl", 3), tmp_path / "samples.jsonl"
    proc = run("sample.py", f"--ckpt={tiny_pt}", f"--prompts={prompts}", "--temperature=1", f"--out={out}")
    assert "warning" not in proc.stderr, proc.stderr
    lengths = [len(ids) for r in read(out) for ids in r["response_ids"]]
    assert len(lengths) == 3 and max(lengths) == 160 // 4  # this barely trained model rarely ends an answer
    # asking for more than fits still warns, and gets half the context
    proc = run("sample.py", f"--ckpt={tiny_pt}", f"--prompts={prompts}", "--temperature=1", "--max_new_tokens=256",
               f"--out={out}")
    assert "answers are capped at 80 tokens, half the context of 160" in proc.stderr
    assert all(len(ids) <= 80 for r in read(out) for ids in r["response_ids"])


def test_chat_keeps_three_quarters_of_the_context_for_the_conversation_and_says_what_it_drops(tiny_pt):
    # each turn is 73 tokens rendered: one fits the conversation's 120 of 160, a turn and an answer after it do not,
    # so every turn after the first drops the exchange before it, and says so
    turns = [f"Question {i}: what does the drook eat, and where does it live?".ljust(70, "?") for i in range(3)]
    assert len(get_tokenizer("bytes").render_prompt([{"role": "user", "content": turns[0]}])) == 73
    lines = "".join(t + "\n" for t in turns)
    proc = run("sample.py", f"--ckpt={tiny_pt}", "--chat", stdin=lines)
    assert proc.stdout.count("assistant> ") == 3 and "warning" not in proc.stderr, proc.stderr
    note = "(2 oldest messages left out: the conversation may take 120 of the context's 160 tokens)"
    assert proc.stdout.count(note) == 2, proc.stdout
    proc = run("sample.py", f"--ckpt={tiny_pt}", "--prompt=The drook")  # text completion: no warning either
    assert proc.stdout.startswith("The drook") and proc.stderr == ""


def test_prompts_keep_the_token_ids_the_model_sampled(world, tiny_pt, tmp_path):
    prompts, out = prompts_file(world, tmp_path / "p.jsonl", 4), tmp_path / "samples.jsonl"
    run("sample.py", f"--ckpt={tiny_pt}", f"--prompts={prompts}", "--num_samples=3", "--temperature=1",
        "--max_new_tokens=24", f"--out={out}", "--dtype=float32")
    tok = get_tokenizer("bytes")
    records = read(out)
    # the ids are the generation itself: the same call, the same seed, the same precision
    model = model_from_checkpoint(load_checkpoint(tiny_pt), dropout=0.0).eval()
    rendered = [tok.render_prompt(r["messages"]) for r in records for _ in range(3)]
    again = generate_batched(model, rendered, setup("cpu", "float32"), tok.pad_id, tok.end_id, 24, 1.0, None, 1.0, 64,
                             torch.Generator().manual_seed(1337))
    assert [ids for r in records for ids in r["response_ids"]] == [ids for ids, _ in again]
    assert [f for r in records for f in r["finished"]] == [f for _, f in again]
    for r in records:
        assert r["responses"] == [tok.decode(ids) for ids in r["response_ids"]]
    # and they are needed: this barely trained model samples special tokens, unused rows and stray bytes, whose
    # decoded text re-encodes to other tokens (a trained one does so rarely, but it can: the bytes tokenizer
    # decodes any id that is not one byte of valid UTF-8 lossily, and GPT-2's BPE re-encodes text its own way)
    lossy = [ids for r in records for ids in r["response_ids"] if tok.encode(tok.decode(ids)) != ids]
    assert lossy, json.dumps(records)[:2000]


def test_few_shot_prompts_answer_inside_the_quote_with_the_answer_encoded(world, tiny_pt, tmp_path):
    """--few_shot: the pretrained model's answer is what it writes inside Tom's quote (a second labeling policy)."""
    from sample import first_demonstrations, few_shot_prompts, prose_answer
    prompts, out = prompts_file(world, tmp_path / "p.jsonl", 4), tmp_path / "samples.jsonl"
    proc = run("sample.py", f"--ckpt={tiny_pt}", f"--prompts={prompts}", "--few_shot=3",
               f"--demos={world / 'sft_train.jsonl'}", "--num_samples=2", "--temperature=1", "--max_new_tokens=24",
               f"--out={out}")
    assert "demonstrations per prompt" in proc.stdout
    tok = get_tokenizer("bytes")
    records = read(out)
    assert len(records) == 4 and all(len(r["responses"]) == 2 for r in records)
    for r in records:  # no quote inside an answer; its ids are its text encoded, as a chat model would write it
        assert all('"' not in y for y in r["responses"])
        assert r["response_ids"] == [tok.encode(y) for y in r["responses"]]
    # the prompt: demonstrations then the conversation, all prose, ending inside Tom's opening quote
    demos = first_demonstrations(world / "sft_train.jsonl", 3)
    (p,), shots = few_shot_prompts(tok, records[:1], demos, 80)
    text = tok.decode(p)
    assert text.endswith(' Tom said, "') and "<|" not in text and 0 <= shots <= 3
    assert prose_answer('The lamp is red." Mia said') == ("The lamp is red.", True)
    assert prose_answer("The lamp is") == ("The lamp is", False)
