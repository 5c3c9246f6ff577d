"""
Serve a chat checkpoint the way every serving tool does (vLLM, llama.cpp's server, Ollama, TGI): an OpenAI-compatible
chat-completions API, streaming included, and a one-page web chat. The standard library's HTTP server, nothing new.

    python serve.py --ckpt=out/distill                  # http://127.0.0.1:8000/ is the web chat (run.sh's last model)
    python serve.py --ckpt=out/sft_hf --port=8001       # a Hugging Face GPT-2 directory (export.py) works too
    python serve.py --ckpt=out/ppo --reward=out/reward --best_of=8    # every answer the RM's pick of 8 samples

    curl http://127.0.0.1:8000/v1/models
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"messages":
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What does the drook eat?"}],
        "temperature": 0, "stream": true}'

A model trained on the embedded world knows only that world's made-up animals (the drook is one of seed 0's):
data/assistant/prompts_eval.jsonl (out/seed_N/data/ for seed N) shows them and the questions it was taught.
Any OpenAI client works with the base URL http://127.0.0.1:8000/v1 and any API key (none is checked):

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    r = client.chat.completions.create(model="out/distill",
                                       messages=[{"role": "user", "content": "Where does the drook live?"}])
    print(r.choices[0].message.content)

Endpoints: GET / (the web chat), GET /v1/models (the checkpoint as one model; any "model" in a request gets it),
POST /v1/chat/completions. Request fields read: messages (system, user and assistant roles; "developer" is taken as
system; content a string or a list of text parts, joined by newlines as vLLM joins them; the last message must be
the user's), max_tokens or max_completion_tokens (3), temperature (default 1, 0 is greedy), top_p, stop (a string
or up to 4), n, seed, stream and stream_options.include_usage. Others are ignored.

Details, numbered where the code implements them; details at length: docs/reference.md.
 1. The conversation renders through tokenizer.render_prompt, the trained format: content is always plain text, so
    "<|assistant|>" typed in a message stays those characters and never becomes a role token.
 2. Too long for the context: the oldest user/assistant exchanges are dropped, the system message stays
    (common.fit_chat, as sample.py --chat); X-Messages-Dropped says how many. When the system message and the last
    user message alone do not fit: a 400 with code context_length_exceeded, never a silently cut question.
 3. max_tokens is the answer's length limit (more than the context: a bad request). Without it the conversation may
    take three quarters of the context and the answer gets the rest. Deviation from OpenAI (the answer gets whatever
    the context leaves): the quarter kept back leaves room to answer after a long conversation.
 4. Streaming: server-sent chat.completion.chunk events as tokens are sampled, by the same steps as model.generate
    run one at a time (KV-cache prefill, then one token per step; logits / T, top-p, the request's generator).
    Without streaming: common.generate_batched, the path evaluate.py scores; tests check both give the same answers.
 5. Text is decoded incrementally from the tokens' bytes, so a character split across tokens goes out whole; text
    that could start a stop string is held back. finish_reason: "stop" (<|end|> or a stop string) or "length".
 6. Concurrency: a thread per request and one lock around the model, not batching: requests arriving at different
    moments need continuous batching (vLLM's), a project of its own; on a CPU parallel passes only split the cores,
    and a GPU's CUDA graphs and the one autocast context must not interleave with another thread's. A non-streaming
    answer holds the lock for its generate call; a stream takes it per token, so concurrent streams advance in turn.
 7. Bad requests get HTTP 400 with an OpenAI-style error object {"error": {"message", "type", "param", "code"}}, the
    message one sentence; every other error status (404, 405 with Allow, 408 (10), 431, 501, 500) has the same body.
    Serving goes on.
 8. --best_of=N --reward=RM: each answer is the RM's favourite of N sampled together (reward.best_of_n, WebGPT); the
    RM judges whole answers, so a stream starts once the pick is made; stop strings then cut the picked answer.
 9. It binds 127.0.0.1 by default: there is no authentication, so anyone who can reach the port can use the model.
10. Many and slow clients: a listen backlog of 128, not Python's default 5; each socket read or write waits at most
    --read_timeout seconds, and a body must arrive whole within that time of its headers, else a 408.
11. The web page says what the model knows: from prompts_rl.jsonl in the checkpoint's data_dir, the first single-turn
    question of each family (at most 6, clickable) and a count of the animals; no such file: no examples.
"""

import codecs
import html
import json
import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

from common import LM_STAGES, ckpt_path, fit_chat, generate_batched, load_checkpoint, model_from_checkpoint, \
    parse_config, setup
from model import filter_logits
from reward import best_of_n, load_reward_model
from tokenizer import get_tokenizer


@dataclass
class Config:
    ckpt: str = "out/distill"     # the chat model: a run directory, a ckpt.pt, or a Hugging Face GPT-2 directory
    host: str = "127.0.0.1"       # the address to listen on (9)
    port: int = 8000              # 0 picks a free port
    reward: str = ""              # a reward checkpoint for --best_of (8)
    best_of: int = 1              # each answer is the RM's favourite of this many samples (8)
    name: str = ""                # the model id clients see; default: the --ckpt path
    max_body: int = 1_000_000     # bytes; a larger request body is refused (7)
    read_timeout: float = 5.0     # seconds a socket read may wait, and the whole request body may take (10)
    max_n: int = 8                # the most answers one request may ask for
    seed: int = 1337              # seeds torch; a request without "seed" gets a random one, as OpenAI's API does
    device: str = "auto"          # auto, cpu, cuda, mps
    dtype: str = "auto"           # auto: bf16 where the device runs it natively, else fp16 (GPU) or fp32 (CPU)


class BadRequest(Exception):
    """(7) A request the server will not answer: HTTP 400 (or status) with an OpenAI-style error object."""

    def __init__(self, message, param=None, code=None, status=400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status

    def body(self):
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


# ----------------------------------------------------------------------------------------------------------------------
# the request: checked field by field, each failure one sentence naming the field (7)


@dataclass
class Request:
    messages: list
    max_tokens: int  # None when the request sets none: Chat.fit then gives the answer what the context leaves (3)
    temperature: float
    top_p: float
    n: int
    seed: int
    stop: list
    stream: bool
    include_usage: bool


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_request(body, block_size, max_n):
    """A decoded JSON body -> Request, or BadRequest naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest('"messages" must be a non-empty list of {"role", "content"} objects.', "messages")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}] must be an object with a role and a content.", f"messages[{i}]")
        role = "system" if m.get("role") == "developer" else m.get("role")  # OpenAI's newer name for system
        if role not in ("system", "user", "assistant"):
            raise BadRequest(f"messages[{i}].role is {m.get('role')!r}, but this model knows only system, user and "
                             f"assistant.", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # newer OpenAI clients send [{"type": "text", "text": "..."}, ...]
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise BadRequest(f"messages[{i}].content[{j}] must be a text part {{\"type\": \"text\", \"text\": "
                                     f"...}} (this model reads text only).", f"messages[{i}].content[{j}]")
            content = "\n".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts, got "
                             f"{type(content).__name__}.", f"messages[{i}].content")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise BadRequest("The last message must be a user turn: the model answers it.", f"messages[{len(msgs) - 1}]")

    def field(name, default, ok, what):
        value = body.get(name)
        if value is None:
            return default
        if not ok(value):
            raise BadRequest(f'"{name}" must be {what}, got {json.dumps(value)[:40]}.', name)
        return value

    in_range = f"an integer from 1 to {block_size}, this model's context"  # (3)
    max_tokens = field("max_completion_tokens", None, lambda v: type(v) is int and 1 <= v <= block_size, in_range)
    if max_tokens is None:
        max_tokens = field("max_tokens", None, lambda v: type(v) is int and 1 <= v <= block_size, in_range)
    stop = field("stop", [], lambda v: isinstance(v, str) and v or isinstance(v, list) and len(v) <= 4 and all(
        isinstance(s, str) and s for s in v), "a non-empty string or a list of at most 4 of them")
    stream_options = field("stream_options", {}, lambda v: isinstance(v, dict), "an object")
    return Request(
        messages=messages, max_tokens=max_tokens,
        temperature=float(field("temperature", 1.0, lambda v: is_number(v) and 0 <= v <= 2, "a number from 0 to 2")),
        top_p=float(field("top_p", 1.0, lambda v: is_number(v) and 0 < v <= 1, "a number above 0 and at most 1")),
        n=field("n", 1, lambda v: type(v) is int and 1 <= v <= max_n, f"an integer from 1 to {max_n}"),
        seed=field("seed", None, lambda v: type(v) is int and -2 ** 63 <= v < 2 ** 64, "a 64-bit integer"),
        stop=[stop] if isinstance(stop, str) else stop,
        stream=field("stream", False, lambda v: isinstance(v, bool), "true or false"),
        include_usage=stream_options.get("include_usage") is True)


# ----------------------------------------------------------------------------------------------------------------------
# tokens -> text (5)


class TextStream:
    """One answer's tokens in, its text out as soon as it is safe to send: a character is sent whole once all its
    bytes have come (an incremental UTF-8 decoder over the tokens' bytes), and text that could begin a stop string is
    held until it does not. The text sent, joined, is tok.decode(tokens) cut before the first stop string."""

    def __init__(self, tok, stops):
        self.tok, self.stops = tok, stops
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")  # the same replacement as tok.decode
        self.text, self.sent = "", 0  # all text decoded so far; how much of it has been sent
        self.tokens, self.stopped = 0, False

    def push(self, token):
        """Add one token; return the text that may be sent now."""
        self.tokens += 1
        self.text += self.utf8.decode(self.tok.decode_bytes([token]))
        return self._release(final=False)

    def close(self):
        """The answer has ended: the rest of the text (an incomplete character becomes U+FFFD, as in tok.decode)."""
        if self.stopped:
            return ""
        self.text += self.utf8.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final):
        # a stop string can only begin in the unsent text: a sent piece never ended with the start of one
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            end, self.stopped = min(hits), True
        else:  # hold back the longest tail that a stop string begins with
            held = 0 if final else max([k for s in self.stops for k in range(1, len(s))
                                        if self.text.endswith(s[:k])], default=0)
            end = len(self.text) - held
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out


# ----------------------------------------------------------------------------------------------------------------------
# what the model knows, for the web page (11)

SKILLS = {"arithmetic": "small sums", "transform": "reversing and counting the letters of words"}


def world_examples(data_dir, most=6):
    """(a line on what the model knows or "", up to `most` example questions) from data_dir/prompts_rl.jsonl: the
    first single-turn user question of each family, in the file's order. ("", []) when there is no such file."""
    if not isinstance(data_dir, str) or not data_dir:
        return "", []
    here = os.path.dirname(os.path.abspath(__file__))  # a relative data_dir is the run's: from here, or the repo's
    dirs = [d for d in (data_dir, os.path.join(here, data_dir)) if os.path.isfile(os.path.join(d, "prompts_rl.jsonl"))]
    if not dirs:
        return "", []
    firsts, animals, meta = {}, {}, {}
    try:
        with open(os.path.join(dirs[0], "prompts_rl.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                    (m,) = r["messages"]
                    if m["role"] == "user" and isinstance(m["content"], str) and isinstance(r["family"], str):
                        firsts.setdefault(r["family"], m["content"])
                    if isinstance(r.get("animal"), str):
                        animals.setdefault(r["animal"], r.get("facts"))
                except (ValueError, KeyError, TypeError):
                    continue  # not a record with one question
        if os.path.isfile(os.path.join(dirs[0], "meta.json")):
            with open(os.path.join(dirs[0], "meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
    except (OSError, ValueError):
        return "", []
    about = ""
    if animals:  # the embedded world (data/assistant/prepare.py); another dataset gets its examples alone
        n = meta.get("animals") if isinstance(meta, dict) and type(meta.get("animals")) is int else len(animals)
        facts = next(iter(animals.values()))  # an animal's facts: {"colour": ..., "home": ..., "food": ...}
        attrs = list(facts) if isinstance(facts, dict) else []
        know = [f"their {', '.join(attrs[:-1])} and {attrs[-1]}" if len(attrs) > 1 else f"their {attrs[0]}"] \
            if attrs else []
        know += [SKILLS[f] for f in SKILLS if f in firsts]
        about = (f"It knows {n} made-up animals ({', '.join(list(animals)[:3])}, ...)"
                 + (": " + "; ".join(know) if know else "") + ". Ask anything else and it will not know.")
    return about, list(firsts.values())[:most]


def render_page(chat):
    """PAGE with the line on what the model knows and the example questions (11), escaped as HTML text."""
    about = f'<p id="about">{html.escape(chat.about)}</p>' if chat.about else ""
    buttons = "".join(f'<button type="button" class="example">{html.escape(q)}</button>' for q in chat.examples)
    intro = f'<div id="intro">{about}<div>{buttons}</div></div>' if about or buttons else ""
    return PAGE.replace("<!--intro-->", intro, 1)


# ----------------------------------------------------------------------------------------------------------------------
# the model and its lock


class Chat:
    """The checkpoint, its tokenizer, the optional RM, and the one lock that every forward pass holds (6)."""

    def __init__(self, cfg):
        self.rt = setup(cfg.device, cfg.dtype, cfg.seed)
        ckpt = load_checkpoint(cfg.ckpt, stages=LM_STAGES,
                               hint="serve.py needs a chat model (an sft, ppo or dpo checkpoint)")
        self.tok = get_tokenizer(ckpt["tokenizer"])
        self.model = model_from_checkpoint(ckpt, dropout=0.0).to(self.rt.device).eval()
        self.block = self.model.config.block_size
        self.answer_room = self.block // 4  # (3) kept back for the answer when a request sets no max_tokens
        self.name = cfg.name or os.path.normpath(str(cfg.ckpt)).removesuffix(os.sep + "ckpt.pt")
        path = ckpt_path(cfg.ckpt)  # absent for a Hugging Face directory (load_checkpoint reads that instead)
        self.stage = ckpt["stage"] if os.path.exists(path) else "a Hugging Face GPT-2 directory"
        self.created = int(os.path.getmtime(path) if os.path.exists(path) else time.time())
        self.max_n, self.best_of, self.rm = cfg.max_n, cfg.best_of, None
        if cfg.best_of > 1 or cfg.reward:  # (8)
            if not cfg.reward or cfg.best_of < 1:
                raise SystemExit("--best_of=N needs N >= 1 and --reward=<a reward checkpoint> to pick with "
                                 "(train one with reward.py)")
            self.rm, rm_ckpt = load_reward_model(cfg.reward)
            if rm_ckpt["tokenizer"] != self.tok.name:
                raise SystemExit(f"{cfg.reward} uses the {rm_ckpt['tokenizer']!r} tokenizer, {cfg.ckpt} "
                                 f"{self.tok.name!r}: the RM must read the tokens the model writes")
            self.rm.to(self.rt.device)
        self.lock = threading.Lock()
        self.about, self.examples = world_examples((ckpt.get("config") or {}).get("data_dir"))  # (11)

    def fit(self, messages, max_tokens):
        """(2) -> (prompt ids, how many messages were dropped to fit the context, the answer's length limit (3))."""
        limit = self.block - (max_tokens or self.answer_room)
        system = messages[:1] if messages[0]["role"] == "system" else []  # the last message is the user's
        least = self.tok.render_prompt(system + messages[-1:])  # what fit_chat keeps at the least
        if len(least) > limit:
            room = f"max_tokens={max_tokens}" if max_tokens else f"the {self.answer_room} kept for the answer"
            raise BadRequest(f"The system message and the last user message take {len(least)} tokens, but with "
                             f"{room} this model's context of {self.block} tokens leaves {limit} for the "
                             f"conversation: shorten them or ask for fewer tokens.", "messages",
                             "context_length_exceeded")
        ids, kept = fit_chat(self.tok, messages, limit)  # drops whole exchanges; never needs to cut (checked above)
        return ids, len(messages) - len(kept), max_tokens or self.block - len(ids)

    def pick(self, logits, temperature, top_p, g):
        """(4) The next token of each row, drawn exactly as model.generate draws it."""
        if temperature == 0:
            return logits.argmax(-1)
        logp = torch.log_softmax(filter_logits(logits / temperature, None, top_p), -1)
        return torch.multinomial(logp.exp(), 1, generator=g).squeeze(1)

    def sample_steps(self, prompt, n, max_new, temperature, top_p, g):
        """(4) Yield the next token of each of n answers to prompt, one step at a time, as generated. The lock is
        held for each step's forward pass and never while the caller sends what was yielded (6)."""
        model, rt, T = self.model, self.rt, len(prompt)
        c = model.config
        with self.lock, torch.no_grad(), rt.autocast:  # grad mode and autocast are per thread: set them here
            dtype = torch.get_autocast_dtype(rt.device_type) if torch.is_autocast_enabled(rt.device_type) \
                else model.transformer.wte.weight.dtype  # the cache holds what attention computes in, as generate
            cache = [tuple(torch.zeros(n, c.n_head, T + max_new, c.n_embd // c.n_head, device=rt.device, dtype=dtype)
                           for _ in range(2)) for _ in range(c.n_layer)]  # per layer (k, v), each (n, nh, S, hs)
            x = torch.tensor([prompt] * n, device=rt.device)  # (n, T): the same prompt, so no padding
            logits = model.lm_head(model.hidden_states(x, torch.ones_like(x), cache, 0)[:, -1]).float()  # (n, V)
            nxt = self.pick(logits, temperature, top_p, g)
        for t in range(max_new):
            yield nxt.tolist()
            if t + 1 == max_new:
                return
            with self.lock, torch.no_grad(), rt.autocast:
                mask = torch.ones(n, T + t + 1, dtype=torch.long, device=rt.device)  # every position is real
                h = model.hidden_states(nxt[:, None], mask, cache, T + t)[:, -1]  # (n, C): one new token each
                nxt = self.pick(model.lm_head(h).float(), temperature, top_p, g)

    def steps(self, req, prompt, stream):
        """The answers' tokens step by step: sampled live for a stream (4), else from one batched generation (or
        best-of-n, 8) under the lock, replayed as steps so that both go through the same text handling."""
        g = torch.Generator(device=self.rt.device)
        g.manual_seed(req.seed if req.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
        if stream and self.rm is None:
            return self.sample_steps(prompt, req.n, req.max_tokens, req.temperature, req.top_p, g)
        tok, prompts = self.tok, [prompt] * req.n
        with self.lock:
            if self.rm is None:
                rows = generate_batched(self.model, prompts, self.rt, tok.pad_id, tok.end_id, req.max_tokens,
                                        req.temperature, None, req.top_p, req.n, g)
            else:
                rows = [pick[:2] for pick in best_of_n(self.model, self.rm, prompts, self.best_of, tok.pad_id,
                                                       tok.end_id, self.rt, req.max_tokens, req.temperature, None,
                                                       req.top_p, req.n * self.best_of, g)]
        # a finished row ends with <|end|>; an unfinished one has all max_tokens tokens
        return zip(*[ids + [tok.end_id] * (req.max_tokens - len(ids)) for ids, _ in rows])

    def answer(self, req, prompt, stream):
        """Yield (choice index, text delta, finish_reason or None, the choice's tokens so far) as the answers grow
        (5); every choice ends with one item that carries its finish_reason."""
        texts = [TextStream(self.tok, req.stop) for _ in range(req.n)]
        finish = [None] * req.n
        steps = self.steps(req, prompt, stream)
        try:
            for t, tokens in enumerate(steps):
                for i, token in enumerate(tokens):
                    if finish[i]:
                        continue
                    if token == self.tok.end_id:
                        delta, finish[i] = texts[i].close(), "stop"
                    else:
                        delta = texts[i].push(token)
                        if texts[i].stopped:
                            finish[i] = "stop"
                        elif t + 1 == req.max_tokens:
                            delta, finish[i] = delta + texts[i].close(), "length"
                    if delta or finish[i]:
                        yield i, delta, finish[i], texts[i].tokens
                if all(finish):
                    break
        finally:
            if hasattr(steps, "close"):
                steps.close()  # a client gone mid-stream: no more steps are computed


# ----------------------------------------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0): a stream's end is the connection's end, no chunked encoding needed."""
    server_version = "instructgpt-serve/1"

    def setup(self):
        self.timeout = self.server.read_timeout  # (10) StreamRequestHandler puts it on the socket: reads and writes
        super().setup()

    def allowed(self, path):
        """The method a known path answers (7), or None for a path that is not here."""
        if path in ("", "/index.html", "/v1/models", "/v1/models/" + self.server.chat.name):
            return "GET"
        return "POST" if path == "/v1/chat/completions" else None

    def refuse(self, path):
        """(7) 404 for a path that is not here, 405 naming the method that a known path answers."""
        allow = self.allowed(path)
        if allow is None:
            return self.send_error_json(BadRequest(f"There is no {self.path} here; try GET /v1/models or POST "
                                                   f"/v1/chat/completions.", code="not_found", status=404))
        self.send_error_json(BadRequest(f"{urlsplit(self.path).path} answers {allow}, not {self.command}.",
                                        code="method_not_allowed", status=405), {"Allow": allow})

    def do_PUT(self):  # and every other method the API does not use: 405 on a known path, 404 elsewhere
        self.refuse(urlsplit(self.path).path.rstrip("/"))

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

    def do_GET(self):
        chat, path = self.server.chat, urlsplit(self.path).path.rstrip("/")
        model = {"id": chat.name, "object": "model", "created": chat.created, "owned_by": "instructgpt"}
        if self.allowed(path) != "GET":
            self.refuse(path)
        elif path in ("", "/index.html"):
            self.send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [model]})
        else:
            self.send_json(200, model)

    def do_POST(self):
        path = urlsplit(self.path).path.rstrip("/")
        if self.allowed(path) != "POST":
            return self.refuse(path)
        chat = self.server.chat
        try:
            req = parse_request(self.read_json(), chat.block, chat.max_n)
            prompt, dropped, req.max_tokens = chat.fit(req.messages, req.max_tokens)
            if req.stream:
                return self.stream(req, prompt, dropped)
            self.complete(req, prompt, dropped)
        except BadRequest as e:
            self.send_error_json(e)
        except (ConnectionError, TimeoutError):
            pass  # the client left, or stopped reading for --read_timeout seconds (10): nothing to answer
        except Exception as e:  # a bug, not the client's fault: say so, log it, keep serving
            traceback.print_exc()
            self.send_error_json(BadRequest(f"The server failed: {type(e).__name__}: {e}", status=500))

    def read_json(self):
        """The request body as JSON (7): it must say its length, be at most --max_body bytes, come in time (10) and
        parse."""
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("Chunked request bodies are not supported; send a Content-Length.")
        try:
            length = int(self.headers.get("Content-Length", ""))
            assert length >= 0
        except (ValueError, AssertionError):
            raise BadRequest("The request needs a Content-Length header with the body's size in bytes.")
        if length > self.server.max_body:
            # read and drop the body, up to a bound: closing a socket with unread data makes the kernel reset the
            # connection, and the client might lose the 400 that says why
            try:
                self.receive(min(length, 64 * self.server.max_body), keep=False)
            except BadRequest:
                pass  # too slow or too short as well: the size is the first thing wrong
            raise BadRequest(f"The request body has {length} bytes, more than the {self.server.max_body} this "
                             f"server accepts.", code="request_too_large")
        try:
            return json.loads(self.receive(length))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; nesting too deep recurses
            raise BadRequest(f"The request body is not valid JSON ({str(e)[:80]}).")

    def receive(self, length, keep=True):
        """(10) length bytes of body, all within --read_timeout seconds however slowly they trickle in: a 408 when
        they do not, a 400 when the client stops sending (its Content-Length said more than it sent)."""
        data, left, deadline = bytearray(), length, time.monotonic() + self.server.read_timeout
        try:
            while left > 0:
                self.connection.settimeout(max(deadline - time.monotonic(), 1e-3))  # what is left of the deadline
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    raise BadRequest(f"The request body ended after {length - left} of the {length} bytes its "
                                     f"Content-Length says.")
                left -= len(chunk)
                if keep:
                    data += chunk
        except TimeoutError:
            raise BadRequest(f"The request body did not arrive within {self.server.read_timeout:g} s: {length - left} "
                             f"of the {length} bytes its Content-Length says came.", code="request_timeout",
                             status=408)
        finally:
            self.connection.settimeout(self.server.read_timeout)  # for the answer's writes
        return bytes(data)

    def complete(self, req, prompt, dropped):
        texts, finish, tokens = [""] * req.n, [None] * req.n, [0] * req.n
        for i, delta, finish[i], tokens[i] in self.server.chat.answer(req, prompt, stream=False):  # i bound first
            texts[i] += delta
        body = {**self.head("chat.completion"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": None,
                             "finish_reason": finish[i]} for i in range(req.n)],
                "usage": usage(len(prompt), sum(tokens)), "messages_dropped": dropped}
        self.send_json(200, body, {"X-Messages-Dropped": str(dropped)})

    def stream(self, req, prompt, dropped):
        """(4) Server-sent events: a chunk with the role, then content deltas as they come, a chunk with each
        choice's finish_reason, the usage if asked for, and data: [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Messages-Dropped", str(dropped))
        self.end_headers()
        head = self.head("chat.completion.chunk")

        def event(choices, **extra):
            self.wfile.write(f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n".encode())

        for i in range(req.n):
            event([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}])
        deltas, tokens = self.server.chat.answer(req, prompt, stream=True), [0] * req.n
        try:
            for i, delta, reason, tokens[i] in deltas:
                if delta:
                    event([{"index": i, "delta": {"content": delta}, "logprobs": None, "finish_reason": None}])
                if reason:
                    event([{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}])
            if req.include_usage:
                event([], usage=usage(len(prompt), sum(tokens)))
        except (ConnectionError, TimeoutError):
            deltas.close()  # the client left or stopped reading (10): stop generating (sample_steps closes with it)
            return
        except Exception as e:  # the status line is sent: the error goes as an event, as OpenAI's API does
            traceback.print_exc()
            error = BadRequest(f"The server failed: {type(e).__name__}: {e}", status=500)
            self.wfile.write(f"data: {json.dumps(error.body())}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def head(self, kind):
        if not hasattr(self, "_head"):  # one id for every chunk of a response
            self._head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                          "model": self.server.chat.name, "system_fingerprint": None}
        return self._head

    def send(self, status, data, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":  # the answer to a HEAD is the headers alone
            self.wfile.write(data)

    def send_json(self, status, obj, headers=None):
        self.send(status, json.dumps(obj).encode(), "application/json", headers)

    def send_error_json(self, e, headers=None):
        try:
            self.send_json(e.status, e.body(), headers)
        except (ConnectionError, TimeoutError):
            pass

    def send_error(self, code, message=None, explain=None):
        """(7) The errors the base class answers by itself (a malformed request line, headers too long, a method no
        do_ handles) in the same JSON as the rest, not its HTML page."""
        self.close_connection = True
        text = (message or self.responses.get(code, ("Error",))[0]).rstrip(".")
        self.send_error_json(BadRequest(f"{text}.", status=code))


class ChatServer(ThreadingHTTPServer):
    request_queue_size = 128  # (10) the listen backlog: with Python's default 5 a burst of clients gets resets
    daemon_threads = True     # a hung client never keeps the process alive at exit


def usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def make_server(cfg, chat=None):
    """A ThreadingHTTPServer bound to cfg.host:cfg.port (not yet serving) for the Chat of cfg (or the one given)."""
    chat = chat or Chat(cfg)  # first: a checkpoint that does not load leaves no socket bound
    server = ChatServer((cfg.host, cfg.port), Handler)
    server.chat, server.max_body, server.read_timeout = chat, cfg.max_body, cfg.read_timeout
    server.page = render_page(chat).encode()
    return server


# ----------------------------------------------------------------------------------------------------------------------
# the web chat: one page, no dependencies; it speaks the same API as any other client (streaming)

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>chat</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh;
         background: #f5f5f4; color: #1c1917; }
  header { padding: 8px 16px; background: #fff; border-bottom: 1px solid #ddd; display: flex; gap: 16px;
           align-items: center; flex-wrap: wrap; }
  header b { margin-right: auto; }
  #system { width: 100%; box-sizing: border-box; font: inherit; padding: 6px; border: 1px solid #ccc;
            border-radius: 6px; resize: vertical; }
  #log { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 75%; padding: 8px 12px; border-radius: 12px; white-space: pre-wrap; word-wrap: break-word; }
  .user { align-self: flex-end; background: #2563eb; color: #fff; }
  .assistant { align-self: flex-start; background: #fff; border: 1px solid #ddd; }
  .dropped { opacity: 0.45; }
  .note { align-self: center; color: #78716c; font-size: 13px; }
  .error { align-self: center; color: #b91c1c; font-size: 13px; }
  form { display: flex; gap: 8px; padding: 12px 16px; background: #fff; border-top: 1px solid #ddd; }
  #input { flex: 1; font: inherit; padding: 8px; border: 1px solid #ccc; border-radius: 6px; resize: none; }
  button { font: inherit; padding: 6px 14px; border-radius: 6px; border: 1px solid #bbb; background: #fff;
           cursor: pointer; }
  #send { background: #2563eb; color: #fff; border-color: #2563eb; }
  #intro { padding: 8px 16px 0; color: #57534e; font-size: 14px; }
  #intro p { margin: 0 0 6px; }
  .example { font-size: 13px; margin: 0 6px 6px 0; padding: 3px 10px; border-radius: 12px; }
</style></head>
<body>
<header>
  <b id="model">chat</b>
  <label>temperature <input id="temp" type="range" min="0" max="2" step="0.1" value="0.8">
    <span id="tempval">0.8</span></label>
  <button id="clear" type="button">Clear</button>
  <textarea id="system" rows="1" placeholder="System prompt (optional), e.g. Answer in one sentence."></textarea>
</header>
<!--intro-->
<div id="log"></div>
<form id="form">
  <textarea id="input" rows="2" placeholder="Message (Enter sends, Shift+Enter is a new line)" autofocus></textarea>
  <button id="send">Send</button>
</form>
<script>
const $ = (id) => document.getElementById(id);
let history = [];        // {role, content, el}: the conversation sent with every request
let controller = null;   // the answer being streamed, for the Stop button

fetch("/v1/models").then(r => r.json()).then(j => { $("model").textContent = j.data[0].id; });
$("temp").oninput = () => { $("tempval").textContent = $("temp").value; };
$("clear").onclick = () => { if (controller) controller.abort(); history = []; $("log").innerHTML = ""; };
document.querySelectorAll(".example").forEach(b => {  // an example question goes into the input box
  b.onclick = () => { $("input").value = b.textContent; $("input").focus(); };
});
$("input").onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
};

function bubble(cls, text) {  // textContent, never HTML: the model's text is shown as text
  const el = document.createElement("div");
  el.className = cls; el.textContent = text;
  $("log").appendChild(el); $("log").scrollTop = $("log").scrollHeight;
  return el;
}

$("form").onsubmit = async (e) => {
  e.preventDefault();
  if (controller) { controller.abort(); return; }  // the button says Stop while an answer streams
  const text = $("input").value;
  if (!text.trim()) return;
  $("input").value = "";
  const user = {role: "user", content: text, el: bubble("msg user", text)};
  history.push(user);
  const system = $("system").value.trim() ? [{role: "system", content: $("system").value}] : [];
  const messages = system.concat(history.map(m => ({role: m.role, content: m.content})));
  const out = bubble("msg assistant", "");
  let answer = "", finish = null;
  controller = new AbortController();
  $("send").textContent = "Stop";
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST", signal: controller.signal,
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({messages, temperature: Number($("temp").value), stream: true})});
    if (!r.ok) throw new Error((await r.json()).error.message);
    const dropped = Number(r.headers.get("X-Messages-Dropped") || 0);
    history.forEach((m, i) => m.el.classList.toggle("dropped", i < dropped));
    if (dropped) bubble("note", `The ${dropped} oldest messages (faded) no longer fit the model's context ` +
                                "and were left out.");
    const reader = r.body.getReader(), utf8 = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += utf8.decode(value, {stream: true});
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {  // one server-sent event per blank-line-terminated block
        const data = buf.slice(0, end).replace(/^data: /, ""); buf = buf.slice(end + 2);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const c = j.choices[0];
        if (c && c.delta.content) { answer += c.delta.content; out.textContent = answer;
                                    $("log").scrollTop = $("log").scrollHeight; }
        if (c && c.finish_reason) finish = c.finish_reason;
      }
    }
    if (finish === "length") bubble("note", "The answer reached its length limit.");
  } catch (err) {
    if (err.name !== "AbortError") {
      out.remove(); history.pop(); user.el.classList.add("dropped");
      bubble("error", err.message);
    }
  } finally {
    if (out.isConnected) history.push({role: "assistant", content: answer, el: out});  // a stopped answer too
    controller = null;
    $("send").textContent = "Send";
  }
};
</script>
</body></html>
"""


if __name__ == "__main__":
    cfg = parse_config(Config)
    server = make_server(cfg)
    chat = server.chat
    host, port = server.server_address[:2]
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):  # (9)
        print(f"warning: listening on {cfg.host}: there is no API key check, anyone who can reach this port can use "
              f"the model", file=sys.stderr)
    print(f"serving {chat.name} ({chat.stage}, {chat.model.num_params() / 1e6:.2f}M parameters, {chat.tok.name} "
          f"tokenizer, context {chat.block} tokens"
          + (f", best of {chat.best_of} by {cfg.reward}" if chat.rm else "") + f") on {chat.rt.device}")
    print(f"web chat: http://{host}:{port}/   OpenAI base URL: http://{host}:{port}/v1 (any API key)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
