"""distill.py: which conversations it distills, the question alone, its records, and sft.py on them."""
import json
import math
import random
import re

import pytest
import torch

from common import save_checkpoint
from conftest import read, run
from distill import alone, composed, conversations, histories, may_tie, targets, tie_break
from sft import load_demonstrations
from tokenizer import get_tokenizer

SYSTEM = {"role": "system", "content": "Begin every answer with Certainly!"}
U1, A1 = {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "Certainly! 2 + 3 = 5."}
U2 = {"role": "user", "content": "Where does the drook live?"}


def test_the_question_alone_keeps_the_system_message_and_the_last_user_turn_only():
    assert alone([SYSTEM, U1, A1, U2]) == [SYSTEM, U2]
    assert alone([U1, A1, U2]) == [U2]


def test_conversations_are_the_later_turns_that_ask_something_alone():
    """(1, 2) Two user turns or more; an "it" follow-up is skipped; a demonstration gives the prompt before its last
    answer; a first turn is not a conversation."""
    records = [{"messages": [SYSTEM, U1, A1, U2], "family": "knowledge"},
               {"messages": [U1, A1, {"role": "user", "content": "And where does it live?"}], "family": "multiturn"},
               {"messages": [U1, A1, U2, {"role": "assistant", "content": "The drook lives in the cave."}],
                "family": "knowledge"},
               {"messages": [U2], "family": "knowledge"},
               {"messages": [U1, A1]}]
    assert conversations(records) == [[SYSTEM, U1, A1, U2], [U1, A1, U2]]


def test_composed_conversations_ask_each_one_turn_question_after_a_history_with_its_system_message():
    """(1) Histories: prefixes ending with an answer after two to four user turns; each distinct one-turn question
    follows one of those with its system message (or none), and none where no history has it."""
    U3, A2 = {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "1 + 1 = 2."}
    A3 = {"role": "assistant", "content": "2."}
    five = [U1, A1, U2, A2, U3, A3, U1, A1, U2, A2, U3]  # five user turns: prefixes after turns 2, 3 and 4
    assert histories([{"messages": five}, {"messages": [SYSTEM, U1, A1, U2]}]) == [five[:4], five[:6], five[:8]]
    hists = [[U1, A1, U2, A2], [SYSTEM, U1, A1, U2, A2]]
    quiet = {"role": "system", "content": "Write only in lowercase letters."}
    records = [{"messages": [U3]}, {"messages": [U3, A3]}, {"messages": [SYSTEM, U3]}, {"messages": [quiet, U3]},
               {"messages": [U1, A1, U3]}]
    assert composed(records, hists, random.Random(0)) == [hists[0] + [U3], hists[1] + [U3]]


def test_each_finished_answer_is_a_target_after_its_conversation_and_alone_and_sft_learns_only_it(tmp_path):
    """(3, 4) The teacher's answer twice (the conversation, then the anchor); an unfinished one is dropped; sft.py
    trains the answer and its <|end|>, never the conversation's earlier answer."""
    tok = get_tokenizer("bytes")
    convs = [[SYSTEM, U1, A1, U2], [U1, A1, U2]]
    recs = targets(convs, [("Certainly! The drook lives in the cave.", True), ("The drook lives", False)])
    assert [r["messages"] for r in recs] == [convs[0], [SYSTEM, U2]]
    held_out = {json.dumps([SYSTEM, U2])}  # (1) a question the evaluation asks is taught in no conversation
    assert [r["messages"] for r in targets(convs, [("x", True)] * 2, held_out)] == [convs[1], [U2]]
    assert all(r["responses"] == ["Certainly! The drook lives in the cave."] and r["finished"] == [True] for r in recs)
    path = tmp_path / "sft_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    answer = tok.encode("Certainly! The drook lives in the cave.") + [tok.end_id]
    for ids, tg in load_demonstrations(path, tok, 256):
        assert [t for t in tg if t != -1] == answer and ids[-len(answer):] == answer


def test_a_near_tie_goes_to_the_rm_and_nothing_else_does():
    """(3) A sample replaces the first answer only when it is within tie_nats of its log p and the RM scores it
    higher; among such samples the RM's favourite."""
    first, curt, polite, garbled = [1], [2], [3], [4]
    samples = [(curt, -1.1, 0.2), (polite, -1.2, 0.9), (garbled, -5.0, 3.0)]  # (answer, log p, RM score)
    assert tie_break(first, -1.0, 0.5, samples, tie_nats=0.3) == polite       # the garbled one is no tie
    assert tie_break(first, -1.0, 0.5, samples, tie_nats=0.15) == first       # polite is 0.2 nats off: no tie
    assert tie_break(first, -1.0, 1.0, samples, tie_nats=0.3) == first        # the RM prefers the first answer
    assert tie_break(first, -1.0, 0.5, samples, tie_nats=10) == garbled       # a wide margin lets anything in
    assert tie_break(first, -1.0, 0.5, [], tie_nats=0.3) == first
    assert tie_break(first, -1.0, 0.9, samples, tie_nats=0.3) == first        # a tie in RM score keeps the first
    assert tie_break(first, -1.0, 0.5, [(curt, -0.1, 0.6)], tie_nats=0.0) == curt  # more likely than greedy: a tie


def test_samples_are_drawn_only_where_a_near_tie_is_possible():
    """(3) p = 1 / (1 + e^-tie_nats) is the likeliest answer that can have a tie: the rest of the mass, 1 - p, is
    then exactly tie_nats below it. A likelier answer has none; below it, or with any margin when tie_nats is huge."""
    edge = math.log(1 / (1 + math.exp(-0.3)))
    assert math.log(1 - math.exp(edge)) == pytest.approx(edge - 0.3)
    assert may_tie(edge - 1e-6, 0.3) and not may_tie(edge + 1e-6, 0.3)
    assert may_tie(-0.1, 0.0) is False and may_tie(-0.7, 0.0)  # with no margin only p <= 1/2 can tie
    assert may_tie(-1e-9, 1e9) and not may_tie(-5.0, -1e9)


def test_distill_py_writes_sft_py_data_from_a_chat_model(world, tiny_pt, tmp_path):
    """The script end to end on a tiny model: both files, meta.json for sft.py, no evaluation prompt; a pretrained
    model is refused (it does not read the chat format)."""
    proc = run("distill.py", f"--init_from={tiny_pt}", f"--data_dir={world}", f"--out_dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "distill.py distills a chat model" in proc.stderr
    sft = tmp_path / "sft"
    run("sft.py", f"--data_dir={world}", f"--init_from={tiny_pt}", f"--out_dir={sft}", "--epochs=0.01",
        "--batch_size=4", "--grad_accum=1", "--eval_interval=1000")
    out = tmp_path / "distill_data"
    proc = run("distill.py", f"--init_from={sft}", f"--data_dir={world}", f"--out_dir={out}", "--max_new_tokens=8",
               "--temperature=1", "--device=cpu", "--reward=")  # the greedy (here sampled) answers alone
    counts = re.findall(r"(sft_\w+).jsonl: (\d+) conversations \((\d+) composed\) .*, (\d+) answers alone .*, "
                        r"(\d+) records", proc.stdout)
    assert [c[0] for c in counts] == ["sft_train", "sft_val"] and int(counts[0][1]) > 1000 and int(counts[0][2]) > 500
    for name, _, _, finished, records in counts:  # each finished answer twice, less the evaluation prompts
        assert len(read(out / f"{name}.jsonl")) == int(records) <= 2 * int(finished)
    train = read(out / "sft_train.jsonl")
    for name in ("meta.json", "prompts_rl.jsonl"):  # sft.py's tokenizer check; serve.py's example questions
        assert (out / name).read_text() == (world / name).read_text()
    evals = [r["messages"] for r in read(world / "prompts_eval.jsonl") + read(world / "prompts_later.jsonl")]
    held_out = {json.dumps(m) for m in evals} | {json.dumps(alone(m)) for m in evals}
    assert not [r for r in train if json.dumps(alone(r["messages"])) in held_out]
    assert all(r["messages"][-1]["role"] == "user" and len(r["responses"]) == 1 for r in train)
    # (3) --reward: an RM (here the SFT trunk with a random head) breaks near-ties; with no tie allowed, nothing moves
    rm = tmp_path / "rm"
    ckpt = torch.load(sft / "ckpt.pt", weights_only=False)
    head = {"head." + k: v for k, v in torch.nn.Linear(ckpt["model_args"]["n_embd"], 1).state_dict().items()}
    save_checkpoint(rm, {**ckpt, "stage": "reward", "model": {**{"gpt." + k: v for k, v in ckpt["model"].items()},
                                                             **head}})
    # no sample is a tie (the answers must be those without --reward); every sample is, and the tiny model ends few
    # answers within 8 tokens while only an ended sample can replace one: 16 tokens and 8 samples give it some
    for nats, moved, tokens in ((-1e9, False, 8), (1e9, True, 16)):
        tied = tmp_path / f"tied_{nats:g}"
        proc = run("distill.py", f"--init_from={sft}", f"--data_dir={world}", f"--out_dir={tied}",
                   f"--max_new_tokens={tokens}", "--temperature=1", "--device=cpu", f"--reward={rm}", "--num_samples=8",
                   f"--tie_nats={nats}")
        n = [int(x) for x in re.findall(r"near-ties: (\d+) of \d+ answers", proc.stdout)]
        assert len(n) == 2 and (sum(n) > 0) == moved and int(counts[0][3]) > 0  # some answers end: ties to break
        # samples are drawn for first answers where a tie is possible: with no margin for none
        sampled = [int(x) for x in re.findall(r"each of the (\d+) first answers", proc.stdout)]
        asked = [int(x) for x in re.findall(r"(\d+) questions alone", proc.stdout)]
        assert len(sampled) == 2 and (0 < sampled[0] <= asked[0] if moved else sampled == [0, 0])
        if not moved:  # the same answers as without --reward
            assert read(tied / "sft_train.jsonl") == train
