"""
Sample from any language-model checkpoint (pretrain, sft, ppo, dpo): complete text, or chat.

    python sample.py --ckpt=out/pretrain --prompt="def fib(n):"      # complete text
    python sample.py --ckpt=out/pretrain --prompt=FILE:start.txt     # the prompt read from a file
    python sample.py --ckpt=out/sft --chat                           # multi-turn chat on the terminal
    python sample.py --ckpt=out/sft --chat --system="Answer briefly." < questions.txt   # one user turn per line
    python sample.py --ckpt=out/sft --prompts=data/assistant/prompts_label.jsonl --num_samples=4 --temperature=0.7 \
        --max_new_tokens=64 --out=out/samples.jsonl       # K answers to every prompt of a file (for labeling)
    python sample.py --ckpt=out/sft --chat --best_of=8 --reward=out/reward   # best-of-8 reranked by the RM
    python sample.py --ckpt=out/pretrain --few_shot=3 --prompts=data/assistant/prompts_label.jsonl \
        --num_samples=1 --temperature=1 --max_new_tokens=64 --out=out/samples_gpt.jsonl   # the prompted base model

Details implemented here:
 1. Generation uses the KV cache of GPT.generate: text completion samples num_samples rows as one batch; a chat
    turn goes through common.generate_batched, the path evaluate.py scores answers with.
 2. Text completion stops at <|endoftext|>; a chat turn stops at <|end|>, and the answer is what came before it.
 3. The default --max_new_tokens=0 fits any checkpoint's context: a text prompt or a chat conversation may take
    three quarters of it and the answer gets what it leaves (as serve.py does); answers to --prompts, one length for
    a whole batch, get a quarter (64 of 256 tokens, run.sh's length, holds nearly every answer of the embedded world,
    whose prompts are cut to the other three quarters).
    A length asked for is capped at half the context for a chat turn or an answer, with a warning; the prompt may
    take the rest. A prompt longer than it may take is cut from the left, with a warning.
 4. Chat keeps as much of the conversation as that allows by dropping the oldest user/assistant exchanges (the
    system message stays), and says how many messages went; when stdin is not a terminal, each line is one user
    turn, so a chat can be scripted.
 5. Past the context, generation slides its window (nanoGPT crops the context the same way).
 6. --prompts: num_samples answers to each record of a JSONL prompts file, all through common.generate_batched at
    the given temperature, written as the record plus "responses" (text), "response_ids" (the sampled tokens, before
    <|end|>) and "finished" (ended with <|end|>, not cut by the length limit). This is how InstructGPT's comparisons
    start: the model answers, labelers rank. The ids travel with the text because decoding is lossy: a special token
    the model samples prints as its name, bytes that are not UTF-8 as U+FFFD, and GPT-2's BPE re-encodes text to
    its own tokenization, so re-encoded text is not always what the policy produced; dpo.py trains on the ids.
 7. --best_of=N --reward=RM (chat and --prompts): each answer is the RM's favourite of N sampled together
    (reward.best_of_n, WebGPT); --prompts then also writes "rm_scores". N = 1 is plain sampling, draw for draw.
 8. --few_shot=K --prompts (a pretrained model): GPT-3's in-context learning. Each prompt comes after up to K
    demonstrations (the first single-turn ones of distinct families in --demos), as many as fit, all written as
    prose the way the corpus writes conversations (Mia asked Tom, "..." Tom said, "..."); the answer is what the
    model writes inside Tom's opening quote, "finished" when it closed the quote. Its "response_ids" are the
    answer's text encoded: the tokens a chat model would have to write to say it. evaluate.py's gpt_prompted row
    answers this way, and run.sh's labeling mixes such answers with the SFT model's (InstructGPT's comparisons
    came from several models).
"""

import json
import os
import sys
from dataclasses import dataclass

import torch

from common import (LM_STAGES, check_messages, fit_chat, generate_batched, left_truncate, load_checkpoint,
                    model_from_checkpoint, parse_config, read_jsonl, setup)
from reward import best_of_n, load_reward_model
from tokenizer import get_tokenizer


@dataclass
class Config:
    ckpt: str = "out/pretrain"     # a checkpoint file or a run directory holding ckpt.pt
    prompt: str = "\n"             # text to complete; FILE:path reads it from a file
    chat: bool = False             # multi-turn chat instead of text completion
    system: str = ""               # chat: an optional system message
    num_samples: int = 1           # completions of the prompt, sampled as one batch
    max_new_tokens: int = 0        # tokens to generate per completion, chat turn or answer; 0: what the context
                                   # allows (3)
    temperature: float = 0.8       # 0 is greedy
    top_k: int = 0                 # keep the k most likely tokens; 0 keeps all
    top_p: float = 1.0             # nucleus sampling; 1.0 keeps all
    prompts: str = ""              # a JSONL file of {"messages": [... user]} records to answer num_samples times
    few_shot: int = 0              # --prompts with a pretrained model: up to this many demonstrations before each
                                   # prompt, in prose (8)
    demos: str = "data/assistant/sft_train.jsonl"  # where --few_shot takes its demonstrations from (8)
    best_of: int = 1               # chat and --prompts: sample this many, keep the one --reward scores highest (7)
    reward: str = ""               # the reward checkpoint that picks with --best_of
    out: str = "samples.jsonl"     # --prompts: where the answers go
    batch_size: int = 256          # --prompts: rows per generation batch (fuller decode steps are faster)
    seed: int = 1337
    device: str = "auto"           # auto, cpu, cuda, mps
    dtype: str = "auto"            # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)


def complete(model, tok, prompt, cfg, rt):
    """(1) num_samples continuations of one prompt (a token list) -> lists of new tokens, each cut before the
    first <|endoftext|> (2).

    (5) Learned positions end at block_size, so when prompt + answer outgrow the context the window slides: the last
    half of the context is kept, the KV cache is refilled from it, and generation goes on.
    """
    block, stop_id = model.config.block_size, tok.eot_id
    x = torch.tensor([prompt or [tok.eot_id]] * cfg.num_samples, dtype=torch.long, device=rt.device)  # (n, T)
    new = x[:, :0]
    g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
    while new.size(1) < cfg.max_new_tokens and not bool((new == stop_id).any(1).all()):
        if x.size(1) >= block:
            x = x[:, -(block // 2):]
        steps = min(cfg.max_new_tokens - new.size(1), block - x.size(1))
        with rt.autocast:
            out, _ = model.generate(x, steps, temperature=cfg.temperature, top_k=cfg.top_k or None,
                                    top_p=cfg.top_p, eos_id=stop_id, pad_id=tok.pad_id, generator=g)
        new, x = torch.cat([new, out[:, x.size(1):]], 1), out
    return [row[:row.index(stop_id)] if stop_id in row else row for row in new.tolist()]


def prose(messages):
    """(8) Turns written as the corpus writes conversations: characters talking in a story, no chat format."""
    said = {"system": 'Tom was told, "{}"', "user": 'Mia asked Tom, "{}"', "assistant": 'Tom said, "{}"'}
    return " ".join(said[m["role"]].format(m["content"]) for m in messages)


def first_demonstrations(path, k):
    """(8) The first k single-turn demonstrations of distinct families."""
    demos, families = [], set()
    for r in read_jsonl(path, check_messages, hint="run python data/assistant/prepare.py"):
        if [m["role"] for m in r["messages"]] == ["user", "assistant"] and r.get("family") not in families:
            demos.append(r)
            families.add(r.get("family"))
        if len(demos) == k:
            break
    return demos


def few_shot_prompts(tok, records, demos, limit):
    """(8) Each record's conversation in prose, behind as many demonstrations as fit in `limit` tokens, ending
    inside Tom's opening quote -> (token lists, mean demonstrations used)."""
    prompts, shots = [], 0
    for r in records:
        query = prose(r["messages"]) + ' Tom said, "'
        used = 0
        while used < len(demos) and len(tok.encode(prose_prefix(demos[:used + 1]) + query)) <= limit:
            used += 1
        prompts.append(tok.encode(prose_prefix(demos[:used]) + query))
        shots += used
    return prompts, shots / max(len(records), 1)


def prose_prefix(demos):
    return "".join(prose(d["messages"]) + " " for d in demos)


def prose_answer(text):
    """(8) What the model wrote inside the quote, and whether it closed the quote (its answer ended)."""
    return text.split('"')[0], '"' in text


def few_shot_answers(model, tok, records, demos, max_new_tokens, rt, num_samples=1, temperature=0.0, top_k=None,
                     top_p=None, batch_size=64, generator=None):
    """(8) num_samples answers to each record behind the prose few-shot prefix (evaluate.py's gpt_prompted row uses
    this greedily) -> ([(text, finished)], record by record; mean demonstrations used)."""
    prompts, shots = few_shot_prompts(tok, records, demos, model.config.block_size - max_new_tokens)
    out = generate_batched(model, [p for p in prompts for _ in range(num_samples)], rt, tok.pad_id, tok.eot_id,
                           max_new_tokens, temperature, top_k, top_p, batch_size, generator)
    return [prose_answer(tok.decode(ids)) for ids, _ in out], shots


if __name__ == "__main__":
    cfg = parse_config(Config)
    rt = setup(cfg.device, cfg.dtype, cfg.seed)
    ckpt = load_checkpoint(cfg.ckpt, stages=LM_STAGES,
                           hint="sample.py needs a language model (pretrain, sft, ppo or dpo checkpoint)")
    tok = get_tokenizer(ckpt["tokenizer"])
    model = model_from_checkpoint(ckpt, dropout=0.0).to(rt.device).eval()
    block = model.config.block_size
    if cfg.max_new_tokens < 0:
        raise SystemExit(f"--max_new_tokens must be 0 (what the context allows) or more, got {cfg.max_new_tokens}")
    # (3) an answer's length: what was asked, up to half the context; by default a quarter of it for --prompts (one
    # length for a whole batch), else None: what the prompt leaves, the prompt taking up to three quarters
    if cfg.max_new_tokens:
        new_tokens = min(cfg.max_new_tokens, block // 2)
    else:
        new_tokens = block // 4 if cfg.prompts else None
    limit = block - (new_tokens or block // 4)  # the prompt's room
    rm = None
    if cfg.best_of > 1 or cfg.reward:  # (7)
        if not cfg.reward:
            raise SystemExit("--best_of needs --reward=<a reward checkpoint> to pick with (train one with reward.py)")
        rm, rm_ckpt = load_reward_model(cfg.reward)
        if rm_ckpt["tokenizer"] != tok.name:
            raise SystemExit(f"{cfg.reward} uses the {rm_ckpt['tokenizer']!r} tokenizer, {cfg.ckpt} {tok.name!r}")
        rm.to(rt.device)

    def answer(prompts, max_new_tokens, g):
        """[(tokens, finished, RM score or None)], one per prompt: sampled, or the best of --best_of (7)."""
        if rm is None:
            return [(ids, fin, None) for ids, fin in generate_batched(
                model, prompts, rt, tok.pad_id, tok.end_id, max_new_tokens, cfg.temperature, cfg.top_k or None,
                cfg.top_p, cfg.batch_size, g)]
        return [pick[:3] for pick in best_of_n(model, rm, prompts, cfg.best_of, tok.pad_id, tok.end_id, rt,
                                               max_new_tokens, cfg.temperature, cfg.top_k or None, cfg.top_p,
                                               cfg.batch_size, g)]

    if (cfg.prompts or cfg.chat) and cfg.max_new_tokens > block // 2:
        print(f"warning: answers are capped at {new_tokens} tokens, half the context of {block} "
              f"(--max_new_tokens={cfg.max_new_tokens} leaves too little room for a prompt)", file=sys.stderr)

    if cfg.prompts:  # (6)
        records = read_jsonl(cfg.prompts, lambda r: check_messages(r, "user"))
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed)
        if cfg.few_shot:  # (8)
            if rm is not None:
                raise SystemExit("--few_shot samples a pretrained model's plain answers; drop --best_of/--reward")
            cut, shots = few_shot_answers(model, tok, records, first_demonstrations(cfg.demos, cfg.few_shot),
                                          new_tokens, rt, cfg.num_samples, cfg.temperature, cfg.top_k or None,
                                          cfg.top_p, cfg.batch_size, g)
            out = [(tok.encode(text), closed, None) for text, closed in cut]
            print(f"{shots:.2f} demonstrations per prompt from {cfg.demos}")
        else:
            prompts = [tok.render_prompt(r["messages"]) for r in records for _ in range(cfg.num_samples)]
            out = answer(prompts, new_tokens, g)
        os.makedirs(os.path.dirname(cfg.out) or ".", exist_ok=True)
        with open(cfg.out + ".tmp", "w") as f:
            for i, r in enumerate(records):
                answers = out[i * cfg.num_samples:(i + 1) * cfg.num_samples]
                f.write(json.dumps({**r, "responses": [tok.decode(ids) for ids, _, _ in answers],
                                    "response_ids": [ids for ids, _, _ in answers],
                                    "finished": [fin for _, fin, _ in answers],
                                    **({"rm_scores": [s for _, _, s in answers]} if rm else {})}) + "\n")
        os.replace(cfg.out + ".tmp", cfg.out)
        print(f"{len(records)} prompts x {cfg.num_samples} answers -> {cfg.out}")
        sys.exit(0)

    if not cfg.chat:
        text = cfg.prompt
        if text.startswith("FILE:"):
            with open(text[5:], encoding="utf-8") as f:
                text = f.read()
        prompt = left_truncate(tok.encode(text), limit, "the prompt")  # (3)
        cfg.max_new_tokens = cfg.max_new_tokens or block - len(prompt)  # (3) by default, the rest of the context
        for i, row in enumerate(complete(model, tok, prompt, cfg, rt)):
            print(text + tok.decode(row))
            if i < cfg.num_samples - 1:
                print("-" * 80)
        sys.exit(0)

    # chat: one user turn per line; on a terminal, with a prompt sign
    interactive = sys.stdin.isatty()
    messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
    if interactive:
        print(f"chatting with {os.path.abspath(cfg.ckpt)} ({ckpt['stage']}); an empty line or ctrl-d ends")
    while True:
        try:
            line = input("user> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            if interactive:
                break
            continue
        if not interactive:
            print(f"user> {line}")
        messages.append({"role": "user", "content": line})
        ids, kept = fit_chat(tok, messages, limit)  # (4)
        if len(kept) < len(messages):
            print(f"({len(messages) - len(kept)} oldest messages left out: the conversation may take {limit} of the "
                  f"context's {block} tokens)")
        messages = kept
        g = torch.Generator(device=rt.device).manual_seed(cfg.seed + len(messages))
        (reply, _, _), = answer([ids], new_tokens or block - len(ids), g)
        text = tok.decode(reply)
        print(f"assistant> {text}", flush=True)
        messages.append({"role": "assistant", "content": text})
