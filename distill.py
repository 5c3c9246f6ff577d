"""
Context distillation (Askell et al. 2021, "A General Language Assistant as a Laboratory for Alignment", section 3.2;
Snell et al. 2022, "Learning by Distilling Context"): a policy answers each later question of a conversation as it
answers the same question alone. This script writes the targets; sft.py trains on them, as run.sh's rft does.

    python ppo.py                                     # out/ppo: RL's gains are made mostly on first turns
    python distill.py                                 # out/ppo, out/reward -> out/distill_data/*.jsonl
    python sft.py --data_dir=out/distill_data --init_from=out/ppo --out_dir=out/distill --epochs=1 \\
        --learning_rate=1e-4 --min_lr=1e-4 --warmup_iters=0 --weight_decay=0 \\
        --tail_average=0.5                            # out/distill (the mean of its last half): chat with this one
    python sample.py --ckpt=out/distill --chat

Why: PPO's gains do not carry to a longer context. On the embedded world its answers in turns 3-5 of a conversation
make things up and answer half of two-part questions more often than the same questions alone, and so do DPO, rft,
GRPO and RLOO, and PPO whose reward is the gold labeler's own score; the same question alone is answered well. The
teacher is the policy itself given the question alone, the RM breaking its near-ties (3); no labeler or ideal answer
enters. Evidence and the recipe's choice: docs/experiments.md, "Conversations, fourteenth try" and "fifteenth try";
the weights averaged over the second half of the epoch (sft.py 9), because the order of the records alone moved the
later-turn results by more than the recipes differed ("Tail average").

Details, numbered where the code implements them.
 1. Conversations: every record with two or more user turns in prompts_rl.jsonl, prompts_label.jsonl and
    sft_train.jsonl (for the demonstrations, the conversation before their last answer), and composed ones: each
    distinct one-turn question of those files after a history drawn from prompts_rl's and prompts_label's
    conversations (a prefix ending with an answer after 2-4 user turns, the world's answers, with the question's
    system message or none), so that every kind of question, not only those that end a conversation, is taught in
    one -> sft_train.jsonl; sft_val.jsonl's -> sft_val.jsonl (sft.py's validation loss). None whose question alone
    is an evaluation prompt or the question alone of one (prompts_eval.jsonl, prompts_later.jsonl): what
    evaluate.py measures in and out of a conversation is never a question distillation has taught.
 2. The question alone is the conversation's system message (if any) and its last user message, nothing between
    (common.question_alone): what evaluate.py (22) measures a later turn against. A question that refers back to
    the conversation ("And where does it live?", the world's family "multiturn") asks nothing alone: skipped.
 3. The teacher's answer: greedy (--temperature=0), at most --max_new_tokens, one for each distinct question alone;
    an answer that does not end by itself is dropped. (run.sh --tiny samples at 1: a tiny model's greedy answers
    never end.) Near-ties go to the RM (--reward; "" turns it off): --num_samples answers at T = 1 beside it, and
    a sample whose log p is at most --tie_nats below the greedy answer's and that the RM scores higher replaces
    it (none are drawn where the greedy answer's p is above 1 / (1 + e^-tie_nats): no other can be that close).
    Where the policy is split between two answers (a polite and a curt refusal), greedy decoding picks by a
    hair and the same question in a conversation may fall the other way; a wide margin would let in the samples
    the RM cannot judge (a wrong sum, a garbled word). Evidence: docs/experiments.md, "Near-ties".
 4. Each target is written twice, as sample.py records {"messages", "responses", "finished"}: after the conversation
    (what is learned) and after the question alone (an anchor: without it the answers alone drift, docs/).
    sft.py (8) trains only the response of such a record: the conversation's earlier answers are context.
"""

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass

import torch

from common import LM_STAGES, answer_logps, check_messages, generate_batched, load_checkpoint, model_from_checkpoint, \
    parse_config, question_alone as alone, read_jsonl, setup
from reward import best_of_n, load_reward_model, pad_right, score_sequences
from tokenizer import get_tokenizer


@dataclass
class Config:
    init_from: str = "out/ppo"          # the policy to distill into itself (any chat checkpoint)
    data_dir: str = "data/assistant"    # prompts_rl.jsonl, prompts_label.jsonl, sft_train.jsonl, sft_val.jsonl
    out_dir: str = "out/distill_data"   # sft.py's --data_dir: sft_train.jsonl, sft_val.jsonl, meta.json (and the
                                        # world's prompts_rl.jsonl, from which serve.py's page draws examples)
    reward: str = "out/reward"          # (3) the RM that breaks the teacher's near-ties; "" = greedy answers only
    num_samples: int = 4                # (3) with --reward: answers sampled at T = 1 beside the first one
    tie_nats: float = 0.3               # (3) a sample at most this many nats less likely than greedy is a tie
    max_new_tokens: int = 64            # (3) the teacher's answer length limit (evaluate.py's)
    temperature: float = 0.0            # (3) the teacher's first answer: 0 is greedy, evaluate.py's; > 0 samples
    batch_size: int = 64                # prompts per generation batch
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"


def prompt_of(record):
    """A record's messages up to its last question (a demonstration's last answer left off)."""
    m = record["messages"]
    return m[:-1] if m[-1]["role"] == "assistant" else m


def user_turns(messages):
    return sum(m["role"] == "user" for m in messages)


def conversations(records):
    """(1, 2) The conversations (message lists ending with a user turn) of records with two or more user turns whose
    last question does not refer back. A demonstration (last message the assistant's) gives the one before it."""
    return [prompt_of(r) for r in records if user_turns(prompt_of(r)) >= 2 and r.get("family") != "multiturn"]


def histories(records):
    """(1) Where a composed conversation begins: each prefix of the records' conversations that ends with an answer
    after two to four user turns (the question that follows is turn 3-5: evaluate.py's later turns)."""
    out = {}
    for r in records:
        m = r["messages"]
        for i, msg in enumerate(m):
            if msg["role"] == "assistant" and 2 <= user_turns(m[:i]) <= 4:
                out[json.dumps(m[:i + 1])] = m[:i + 1]
    return list(out.values())


def composed(records, hists, rng):
    """(1) Each distinct one-turn question of the records after a history drawn at random among those with the same
    system message (or none): the questions the world asks alone, asked again later in a conversation."""
    system = lambda m: m[0]["content"] if m[0]["role"] == "system" else None
    by_system = {}
    for h in hists:
        by_system.setdefault(system(h), []).append(h)
    questions = {json.dumps(q): q for q in map(prompt_of, records) if user_turns(q) == 1}
    out = []
    for q in questions.values():
        pool = by_system.get(system(q))
        if pool:
            out.append(rng.choice(pool) + q[-1:])
    return out


@torch.no_grad()
def sequence_logps(model, prompts, answers, end_id, pad_id, rt, max_new_tokens, batch_size=64):
    """(3) log p of each finished answer (its tokens and <|end|>) after its prompt, the prompt cut to its last
    block_size - max_new_tokens tokens as generate_batched cut it: [float] in answers' order."""
    out, keep = [], model.config.block_size - max_new_tokens
    for i in range(0, len(prompts), batch_size):
        cut = [p[-keep:] for p in prompts[i:i + batch_size]]
        seqs = [p + a + [end_id] for p, a in zip(cut, answers[i:i + batch_size])]
        idx, mask = pad_right(seqs, pad_id, rt.device)                                     # (B, T)
        starts = torch.tensor([len(p) for p in cut], device=rt.device)
        out += answer_logps(model, idx, mask, starts, rt).tolist()
    return out


def near_tie_pick(model, rm, prompts, greedy, cfg, tok, rt, gen):
    """(3) Each prompt's answer: the greedy one, unless a sample at T = 1 is about as likely under the policy (its
    log p at most cfg.tie_nats below the greedy answer's) and the RM scores it higher. Greedy decoding settles a
    near-tie by a hair, the same question in a conversation may fall the other way, and a near-tie taught is a coin
    flip learned."""
    block = rm.gpt.config.block_size
    logps = lambda pairs: sequence_logps(model, [prompts[i] for i, _ in pairs], [ids for _, ids in pairs],
                                         tok.end_id, tok.pad_id, rt, cfg.max_new_tokens)
    ended = [i for i, (_, fin) in enumerate(greedy) if fin]
    first_logp = dict(zip(ended, logps([(i, greedy[i][0]) for i in ended])))
    split = [i for i in ended if may_tie(first_logp[i], cfg.tie_nats)]  # samples are drawn for these only
    picks = best_of_n(model, rm, [prompts[i] for i in split], cfg.num_samples, tok.pad_id, tok.end_id, rt,
                      cfg.max_new_tokens, temperature=1.0, batch_size=cfg.batch_size, generator=gen)
    cands = {i: c for i, p in zip(split, picks) if (c := [(ids, s) for ids, fin, s in p[3]
                                                           if fin and ids != greedy[i][0]])}
    flat = [(i, ids) for i, c in cands.items() for ids, _ in c]
    logp = dict(zip(((i, tuple(ids)) for i, ids in flat), logps(flat)))
    first = dict(zip(cands, score_sequences(
        rm, [(prompts[i] + greedy[i][0] + [tok.end_id])[-block:] for i in cands], tok.pad_id, rt)))
    out = list(greedy)
    for i, c in cands.items():
        ids = tie_break(greedy[i][0], first_logp[i], first[i], [(ids, logp[i, tuple(ids)], s) for ids, s in c],
                        cfg.tie_nats)
        out[i] = (ids, True)
    print(f"near-ties: {sum(a != b for a, b in zip(out, greedy))} of {len(prompts)} answers alone are a sample the "
          f"RM preferred (--tie_nats={cfg.tie_nats}; {cfg.num_samples} samples for each of the {len(split)} first "
          f"answers with p <= 1 / (1 + e^-tie_nats))")
    return out


def may_tie(first_logp, tie_nats):
    """(3) Whether another answer can be a near-tie of one with this log p: a tie's p is at least e^-tie_nats times
    the first's and the two sum to at most 1, so an answer likelier than 1 / (1 + e^-tie_nats) has none."""
    return first_logp <= min(tie_nats, 0) - math.log1p(math.exp(-abs(tie_nats)))  # log(1 / (1 + e^-tie_nats))


def tie_break(first, first_logp, first_score, samples, tie_nats):
    """(3) samples: [(answer, log p, RM score)]. The answer to teach: the RM's favourite among the samples whose log
    p is at most tie_nats below the first answer's (or above it), if it scores above the first answer; else the
    first."""
    ties = [(score, ids) for ids, lp, score in samples if lp >= first_logp - tie_nats]
    return max(ties)[1] if ties and max(ties)[0] > first_score else first


def targets(convs, answers, held_out=()):
    """(4) sample.py records: each finished answer after its conversation and after its question alone; none for a
    conversation whose question alone is in held_out (json.dumps of messages lists: the evaluation's, 1). Held-out
    conversations are answered too: which prompts share a generation batch moves a bf16 greedy answer now and then,
    and the recipe was measured with every conversation answered."""
    out = []
    for msgs, (text, finished) in zip(convs, answers):
        if finished and json.dumps(alone(msgs)) not in held_out:  # (3) (1)
            out += [{"messages": m, "responses": [text], "finished": [True]} for m in (msgs, alone(msgs))]
    return out


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    ckpt = load_checkpoint(cfg.init_from, stages=LM_STAGES[1:], hint="distill.py distills a chat model: run ppo.py")
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    rm = None
    if cfg.reward and cfg.num_samples > 0:  # (3)
        rm, rm_ckpt = load_reward_model(cfg.reward)
        if rm_ckpt["tokenizer"] != ckpt["tokenizer"]:
            raise SystemExit(f"--reward={cfg.reward} uses the {rm_ckpt['tokenizer']!r} tokenizer, the policy "
                             f"{ckpt['tokenizer']!r}: use the RM trained from this policy's SFT model")
        rm = rm.to(rt.device)
    if os.path.abspath(cfg.out_dir) == os.path.abspath(cfg.data_dir):
        raise SystemExit(f"--out_dir={cfg.out_dir} is the world's directory: its sft_train.jsonl would be replaced; "
                         f"use another (run.sh's: out/distill_data)")
    meta = os.path.join(cfg.data_dir, "meta.json")
    if not os.path.exists(meta):
        raise SystemExit(f"{meta} not found: run python data/assistant/prepare.py")
    print(f"config: {json.dumps(asdict(cfg))}")
    held_out = set()  # (1) the evaluation's prompts and their questions alone
    for name in ("prompts_eval.jsonl", "prompts_later.jsonl"):
        if os.path.exists(os.path.join(cfg.data_dir, name)):
            for r in read_jsonl(os.path.join(cfg.data_dir, name), check_messages):
                held_out |= {json.dumps(r["messages"]), json.dumps(alone(r["messages"]))}
    splits = {"sft_train.jsonl": ("prompts_rl.jsonl", "prompts_label.jsonl", "sft_train.jsonl"),
              "sft_val.jsonl": ("sft_val.jsonl",)}
    rng = random.Random(cfg.seed)
    written = {}
    for out_name, sources in splits.items():
        files = {name: read_jsonl(os.path.join(cfg.data_dir, name), check_messages,
                                  hint="run python data/assistant/prepare.py") for name in sources}
        convs = [c for name in sources for c in conversations(files[name])]
        own = len(convs)
        # (1) histories from the RL and labeling prompts: their earlier answers are the world's, as in evaluate.py's
        hists = histories(files.get("prompts_rl.jsonl", []) + files.get("prompts_label.jsonl", []))
        convs += composed([r for name in sources for r in files[name]], hists, rng)
        prompts = [tuple(tok.render_prompt(alone(c))) for c in convs]
        distinct = list(dict.fromkeys(prompts))  # (3) each question alone answered once
        gen = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        out = generate_batched(model, [list(p) for p in distinct], rt, tok.pad_id, tok.end_id, cfg.max_new_tokens,
                               temperature=cfg.temperature, batch_size=cfg.batch_size, generator=gen)  # (3)
        if rm is not None:  # (3) where the policy is split between answers, the RM picks
            out = near_tie_pick(model, rm, [list(p) for p in distinct], out, cfg, tok, rt, gen)
        answer = {p: (tok.decode(ids), fin) for p, (ids, fin) in zip(distinct, out)}
        answers = [answer[p] for p in prompts]
        written[out_name] = targets(convs, answers, held_out)
        print(f"{out_name}: {len(convs)} conversations ({len(convs) - own} composed) from {', '.join(sources)}, "
              f"{len(distinct)} questions alone, {sum(f for _, f in answers)} answers alone that ended by themselves, "
              f"{len(written[out_name])} records (two an answer; none for a question the evaluation asks)")
    os.makedirs(cfg.out_dir, exist_ok=True)
    for out_name, records in written.items():  # each file whole or not at all
        tmp = os.path.join(cfg.out_dir, out_name + ".tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, os.path.join(cfg.out_dir, out_name))
    shutil.copy(meta, os.path.join(cfg.out_dir, "meta.json"))  # sft.py checks the data's tokenizer
    shutil.copy(os.path.join(cfg.data_dir, "prompts_rl.jsonl"), cfg.out_dir)  # serve.py's page: its example questions
    print(f"wrote {cfg.out_dir}: train with python sft.py --data_dir={cfg.out_dir} --init_from={cfg.init_from} "
          f"(run.sh's distill stage)")
