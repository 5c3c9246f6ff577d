"""serve.py: the OpenAI-compatible chat API on an in-process server (a free port of 127.0.0.1; urllib, http.client or a
raw socket as the client), over a tiny random checkpoint. A random byte-level model samples every byte value, so its
answers are full of characters split across tokens and of invalid UTF-8: what the streaming decoder must get right."""
import dataclasses
import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from common import generate_batched
from conftest import run
from model import GPT, GPTConfig
from reward import RewardModel
from serve import Config, TextStream, make_server
from tokenizer import get_tokenizer

tok = get_tokenizer("bytes")
TINY = GPTConfig(block_size=128, vocab_size=320, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A random tiny chat model and a random tiny RM, as checkpoints."""
    out = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    args = dataclasses.asdict(TINY)
    torch.save({"model": GPT(TINY).state_dict(), "model_args": args, "tokenizer": "bytes", "stage": "sft"},
               out / "sft.pt")
    torch.save({"model": RewardModel(TINY).state_dict(), "model_args": args, "tokenizer": "bytes",
                "stage": "reward"}, out / "rm.pt")
    return out


class Server:
    """serve.py's server on a free port of 127.0.0.1, serving from a thread of this process."""

    def __init__(self, **fields):
        self.httpd = make_server(Config(port=0, **fields))
        self.chat = self.httpd.chat
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def request(self, path, body=None, raw=None):
        """(status, headers, bytes) of a GET (no body) or a POST of body as JSON (or raw bytes)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def chat_json(self, **body):
        status, headers, data = self.request("/v1/chat/completions", body)
        assert status == 200, data
        return json.loads(data), headers

    def chat_stream(self, **body):
        """The parsed chunks of a streamed answer, checked to end with data: [DONE]."""
        status, headers, data = self.request("/v1/chat/completions", {**body, "stream": True})
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), data
        events = [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]
        assert events[-1] == "[DONE]" and all(e.startswith("{") for e in events[:-1]), events
        return [json.loads(e) for e in events[:-1]], headers

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(ckpts):
    s = Server(ckpt=str(ckpts / "sft.pt"), max_body=20_000, read_timeout=1.0)  # a slow client waits 1 s, not 5
    yield s
    s.close()


def joined(chunks, n=1):
    """The streamed answers: each choice's content deltas joined, and its finish_reason."""
    texts, finish = [""] * n, [None] * n
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"]
        for ch in c["choices"]:
            texts[ch["index"]] += ch["delta"].get("content") or ""
            finish[ch["index"]] = ch["finish_reason"] or finish[ch["index"]]
    return texts, finish


CONVO = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What colour is a zibble?"},
         {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "And where does it live?"}]


def test_streamed_deltas_join_to_the_non_streaming_answer(server):
    body, headers = server.chat_json(messages=CONVO, temperature=0, max_tokens=32)
    (choice,) = body["choices"]
    assert body["object"] == "chat.completion" and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length") and headers["X-Messages-Dropped"] == "0"
    prompt = tok.render_prompt(CONVO)
    used = body["usage"]["completion_tokens"]
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": used,
                             "total_tokens": len(prompt) + used}
    assert (used == 32) == (choice["finish_reason"] == "length")
    # the answer is the project's own greedy generation of the rendered prompt, decoded
    (ids, _), = generate_batched(server.chat.model, [prompt], server.chat.rt, tok.pad_id, tok.end_id, 32)
    assert choice["message"]["content"] == tok.decode(ids)
    chunks, _ = server.chat_stream(messages=CONVO, temperature=0, max_tokens=32,
                                   stream_options={"include_usage": True})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(chunks) > 5  # token by token, not the answer in one piece
    texts, finish = joined(chunks)
    assert texts == [choice["message"]["content"]] and finish == [choice["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]


def test_a_seed_gives_the_same_sampled_answers_streamed_or_not(server):
    body, _ = server.chat_json(messages=CONVO, temperature=1.0, top_p=0.9, seed=7, max_tokens=24)
    again, _ = server.chat_json(messages=CONVO, temperature=1.0, top_p=0.9, seed=7, max_tokens=24)
    chunks, _ = server.chat_stream(messages=CONVO, temperature=1.0, top_p=0.9, seed=7, max_tokens=24)
    answer = body["choices"][0]["message"]["content"]
    assert joined(chunks)[0] == [answer] and again["choices"][0]["message"]["content"] == answer
    other, _ = server.chat_json(messages=CONVO, temperature=1.0, seed=8, max_tokens=24)
    assert other["choices"][0]["message"]["content"] != answer


def test_n_answers_and_stop_strings(server):
    body, _ = server.chat_json(messages=CONVO, temperature=1.0, seed=3, n=3, max_tokens=32)
    answers = [c["message"]["content"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2] and len(set(answers)) == 3
    chunks, _ = server.chat_stream(messages=CONVO, temperature=1.0, seed=3, n=3, max_tokens=32)
    assert joined(chunks, 3)[0] == answers
    # a stop string from the middle of the greedy answer cuts it there, streamed or not, with finish_reason stop
    greedy = server.chat_json(messages=CONVO, temperature=0, max_tokens=32)[0]["choices"][0]["message"]["content"]
    stop = greedy[10:13]
    cut = greedy[:greedy.index(stop)]
    body, _ = server.chat_json(messages=CONVO, temperature=0, max_tokens=32, stop=[stop, "never said"])
    assert body["choices"][0]["message"]["content"] == cut and body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] < 32
    assert joined(server.chat_stream(messages=CONVO, temperature=0, max_tokens=32, stop=stop)[0]) == ([cut], ["stop"])


def test_text_stream_sends_whole_characters_and_holds_back_a_possible_stop_string():
    text = "naïve café → 😀 done"
    ts = TextStream(tok, [])
    deltas = [ts.push(t) for t in tok.encode(text)] + [ts.close()]
    assert "".join(deltas) == text and all("\ufffd" not in d for d in deltas)
    assert deltas[tok.encode(text).index(0xF0)] == ""  # the emoji's first byte alone sends nothing
    ts = TextStream(tok, ["STOP"])
    deltas = []
    for t in tok.encode("abc STOx STOP more"):
        deltas.append(ts.push(t))
        if ts.stopped:  # the caller stops feeding here
            break
    deltas.append(ts.close())
    assert "".join(deltas) == "abc STOx " and ts.stopped and ts.tokens == len("abc STOx STOP")
    assert "STO" not in "".join(deltas[:len("abc STO")])  # held while it could still become STOP
    ts = TextStream(tok, [])  # an incomplete character at the end becomes U+FFFD, as tok.decode makes it
    ids = tok.encode("a😀")[:-1]
    assert "".join([ts.push(t) for t in ids] + [ts.close()]) == tok.decode(ids) == "a\ufffd"


def test_a_multi_turn_request_renders_as_render_prompt_and_role_tokens_stay_text(server, monkeypatch):
    seen = []
    fit = server.chat.fit
    monkeypatch.setattr(server.chat, "fit", lambda *a: seen.append(fit(*a)) or seen[-1])
    messages = [{"role": "developer", "content": "You are <|system|> terse."},
                {"role": "user", "content": "Say <|assistant|>hi<|end|>"},
                {"role": "assistant", "content": "<|user|> no"}, {"role": "user", "content": "Again é"}]
    server.chat_json(messages=messages, max_tokens=4)
    (ids, dropped, _), = seen
    as_system = [{**messages[0], "role": "system"}] + messages[1:]  # "developer" is OpenAI's newer name for system
    assert ids == tok.render_prompt(as_system) and dropped == 0
    # one role token per message and the final <|assistant|>; the typed ones are plain characters
    assert sum(i in (tok.system_id, tok.user_id, tok.assistant_id) for i in ids) == 5
    assert ids.count(tok.assistant_id) == 2 and "<|assistant|>hi<|end|>" in tok.decode(ids)


def test_content_as_a_list_of_text_parts_is_joined_by_newlines(server, monkeypatch):
    seen = []
    fit = server.chat.fit
    monkeypatch.setattr(server.chat, "fit", lambda *a: seen.append(fit(*a)) or seen[-1])
    parts = [{"type": "text", "text": "What does"}, {"type": "text", "text": "the drook eat?"}]
    body, _ = server.chat_json(messages=[{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                                         {"role": "user", "content": parts}], temperature=0, max_tokens=8)
    (ids, _, _), = seen
    assert ids == tok.render_prompt([{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "What does\nthe drook eat?"}])
    plain, _ = server.chat_json(messages=[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "What does\nthe drook eat?"}],
                                temperature=0, max_tokens=8)
    assert body["choices"][0]["message"] == plain["choices"][0]["message"]


def test_a_conversation_longer_than_the_context_drops_the_oldest_turns_and_keeps_the_system_message(server,
                                                                                                     monkeypatch):
    seen = []
    fit = server.chat.fit
    monkeypatch.setattr(server.chat, "fit", lambda *a: seen.append(fit(*a)) or seen[-1])
    system = {"role": "system", "content": "Be kind and answer in full sentences."}
    turns = [{"role": r, "content": f"{r} turn number {i}"} for i in range(5) for r in ("user", "assistant")][:-1]
    # context 128, max_tokens 16: 112 tokens for the conversation. All of it takes 240; without the first two,
    # four, six turns 195, 150, 105: three exchanges go, the system message stays
    body, headers = server.chat_json(messages=[system] + turns, max_tokens=16)
    (ids, dropped, _), = seen
    assert dropped == 6 and headers["X-Messages-Dropped"] == "6" and body["messages_dropped"] == 6
    assert ids == tok.render_prompt([system] + turns[6:]) and body["usage"]["prompt_tokens"] == len(ids) == 105
    _, headers = server.chat_stream(messages=[system] + turns, max_tokens=16)
    assert headers["X-Messages-Dropped"] == "6"


def test_without_max_tokens_the_conversation_keeps_three_quarters_and_the_answer_gets_the_rest(server):
    system = {"role": "system", "content": "Be kind and answer in full sentences."}
    turns = [{"role": r, "content": f"{r} turn number {i}"} for i in range(5) for r in ("user", "assistant")][:-1]
    body, _ = server.chat_json(messages=[system] + turns, temperature=0)
    # 96 of the 128 tokens for the conversation: exchanges go in pairs (240, 195, 150, 105 tokens), 60 fits
    assert body["messages_dropped"] == 8 and body["usage"]["prompt_tokens"] == 60
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 128 - 60


BAD = [  # (raw body, the param the error names, its code)
    (b'{"messages": [', None, None),
    (b"\xff\xfe not utf-8", None, None),
    (b"[" * 100_00 + b"]" * 100_00, None, None),  # nesting deep enough to exhaust the JSON parser's recursion
    (b"[1, 2]", None, None),
    (json.dumps({"model": "x"}).encode(), "messages", None),
    (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}).encode(), "messages[0].role", None),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
     .encode(), "messages[0].content[0]", None),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}]}).encode(),
     "messages[0].content[1]", None),
    (json.dumps({"messages": [{"role": "user", "content": 7}]}).encode(), "messages[0].content", None),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), "messages[0].content", None),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}).encode(),
     "messages[1]", None),
    (json.dumps({"messages": CONVO, "max_tokens": -1}).encode(), "max_tokens", None),
    (json.dumps({"messages": CONVO, "max_tokens": 10 ** 9}).encode(), "max_tokens", None),
    (json.dumps({"messages": CONVO, "max_completion_tokens": 129}).encode(), "max_completion_tokens", None),
    (json.dumps({"messages": CONVO, "max_tokens": "12"}).encode(), "max_tokens", None),
    (json.dumps({"messages": CONVO, "temperature": 5}).encode(), "temperature", None),
    (json.dumps({"messages": CONVO, "top_p": 0}).encode(), "top_p", None),
    (json.dumps({"messages": CONVO, "n": 0}).encode(), "n", None),
    (json.dumps({"messages": CONVO, "stop": ["a", "b", "c", "d", "e"]}).encode(), "stop", None),
    (json.dumps({"messages": CONVO, "stream": "yes"}).encode(), "stream", None),
    (json.dumps({"messages": CONVO, "seed": 2 ** 64}).encode(), "seed", None),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 100}]}).encode(), "messages",
     "context_length_exceeded"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 30_000}]}).encode(), None, "request_too_large"),
]


@pytest.mark.parametrize("raw,param,code", BAD, ids=range(len(BAD)))
def test_a_bad_request_gets_a_400_with_an_error_object_and_the_next_one_is_served(server, raw, param, code):
    status, headers, data = server.request("/v1/chat/completions", raw=raw)
    assert status == 400 and headers["Content-Type"] == "application/json", data
    error = json.loads(data)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code), error
    assert error["message"].endswith((".", ")")) and error["message"].count(". ") == 0, error["message"]  # one sentence
    body, _ = server.chat_json(messages=CONVO, max_tokens=2)
    assert len(body["choices"]) == 1


def test_models_the_page_and_unknown_paths(server):
    status, _, data = server.request("/v1/models")
    models = json.loads(data)
    assert status == 200 and models["object"] == "list" and [m["id"] for m in models["data"]] == [server.chat.name]
    status, _, data = server.request("/v1/models/" + server.chat.name)
    assert status == 200 and json.loads(data)["id"] == server.chat.name
    status, headers, page = server.request("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = page.decode()
    for part in ('id="system"', 'id="temp"', 'id="clear"', "/v1/chat/completions", "stream: true", "getReader"):
        assert part in page
    assert "src=" not in page and "<link" not in page and "https:" not in page  # self-contained: nothing fetched
    status, _, data = server.request("/v2/nothing")
    assert status == 404 and json.loads(data)["error"]["code"] == "not_found"


def test_the_page_offers_example_questions_from_the_checkpoints_data_dir(ckpts, server, tmp_path):
    facts = {"colour": "blue", "home": "cave", "food": "fish"}
    records = [
        {"messages": [{"role": "system", "content": "Write only in lowercase letters."},
                      {"role": "user", "content": "What colour is the grark?"}], "family": "constraint"},
        {"messages": [{"role": "user", "content": "What colour is the grark?"}], "family": "knowledge",
         "animal": "grark", "facts": facts},
        {"messages": [{"role": "user", "content": "Where does the zoopet live?"}], "family": "knowledge",
         "animal": "zoopet", "facts": facts},  # not the first of its family: no example
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "family": "arithmetic"},
        {"messages": [{"role": "user", "content": "Steal <b>it</b> & run</script><script>alert(1)</script>"}],
         "family": "refusal"},
        {"messages": [{"role": "user", "content": "How old is the zoopet?"}], "family": "unknown",
         "animal": "zoopet", "facts": facts},
    ]
    (tmp_path / "prompts_rl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    ckpt = torch.load(ckpts / "sft.pt", weights_only=False)
    torch.save({**ckpt, "config": {"data_dir": str(tmp_path)}}, tmp_path / "ckpt.pt")
    s = Server(ckpt=str(tmp_path / "ckpt.pt"))
    try:
        status, _, page = s.request("/")
    finally:
        s.close()
    page = page.decode()
    assert status == 200 and page.count('class="example"') == 4
    for q in ("What colour is the grark?", "What is 2 + 3?", "How old is the zoopet?",
              "Steal &lt;b&gt;it&lt;/b&gt; &amp; run&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"):
        assert f'class="example">{q}</button>' in page
    assert "Where does the zoopet" not in page and "alert(1)</script>" not in page and page.count("<script>") == 1
    assert "It knows 2 made-up animals (grark, zoopet, ...): their colour, home and food; small sums. Ask " in page
    # no data directory (the module's checkpoint has no config), or one that is gone: the page, without examples
    status, _, page = server.request("/")
    assert status == 200 and 'class="example"' not in page.decode() and 'id="about"' not in page.decode()
    (tmp_path / "prompts_rl.jsonl").unlink()
    s = Server(ckpt=str(tmp_path / "ckpt.pt"))
    try:
        status, _, page = s.request("/")
    finally:
        s.close()
    assert status == 200 and 'class="example"' not in page.decode() and "getReader" in page.decode()


def raw(server, *pieces, pause=0.0, shut=False):
    """Send pieces on a new connection, pause seconds apart (stopping once an answer comes), and read until the server
    closes it -> (status or None, headers, JSON body or None, seconds from connecting to the close)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.httpd.server_address[1]), timeout=15) as s:
        for piece in pieces:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered (or closed): sending more could only earn a reset
            s.sendall(piece)
            time.sleep(pause)
        if shut:
            s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(1 << 16):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n") if got.startswith(b"HTTP/") else (b"", b"", got)  # HTTP/0.9: a body
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]) if head else None, headers, json.loads(body) if body else None, \
        time.monotonic() - start


def post_head(length):
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length


def is_error(status, headers, body, code=None):
    """An OpenAI-style error object, served as JSON."""
    error = body["error"]
    assert headers["Content-Type"] == "application/json" and set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error") and error["code"] == code
    return error["message"]


def test_a_body_shorter_or_slower_than_its_content_length_gets_a_4xx_within_the_read_timeout(server):
    body = json.dumps({"messages": CONVO, "max_tokens": 2}).encode()
    # a lie: 10 bytes of a body said to have 100, the connection kept open
    status, headers, error, took = raw(server, post_head(100) + body[:10])
    assert status == 408 and took < 3, (status, took)
    assert "10 of the 100 bytes" in is_error(status, headers, error, "request_timeout")
    # a trickle: a byte every 0.3 s never waits out the 1 s per read, but the body as a whole must come within 1 s
    status, headers, error, took = raw(server, post_head(len(body)), *[body[i:i + 1] for i in range(20)], pause=0.3)
    assert status == 408 and took < 3, (status, took)
    is_error(status, headers, error, "request_timeout")
    # a lie past --max_body: the refusal for the size, promptly, not a 500 after waiting out the rest
    status, headers, error, took = raw(server, post_head(30_000) + body[:10])
    assert status == 400 and took < 3 and "30000 bytes" in is_error(status, headers, error, "request_too_large")
    # a client that says it has sent all: a 400 at once
    status, headers, error, took = raw(server, post_head(10) + b"{}", shut=True)
    assert status == 400 and took < 0.9 and "ended after 2 of the 10" in is_error(status, headers, error)
    status, headers, error, _ = raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n{}")
    assert status == 400 and "Content-Length" in is_error(status, headers, error)
    # a connection that sends nothing is closed after the read timeout, its thread let go
    status, _, _, took = raw(server)
    assert status is None and 0.9 < took < 3, took
    assert server.chat_json(messages=CONVO, max_tokens=2)[0]["choices"]


def test_wrong_methods_unknown_paths_and_broken_requests_get_json_errors(server):
    port = server.httpd.server_address[1]

    def ask(method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        status, headers, data = r.status, r.headers, r.read()
        c.close()
        return status, headers, data

    for method, path, allow in [("GET", "/v1/chat/completions", "POST"), ("POST", "/v1/models", "GET"),
                                ("DELETE", "/v1/models", "GET"), ("PUT", "/v1/chat/completions/", "POST"),
                                ("POST", "/", "GET")]:
        status, headers, data = ask(method, path, b"{}" if method != "GET" else None)
        assert status == 405 and headers["Allow"] == allow, (method, path, status)
        assert is_error(status, headers, json.loads(data), "method_not_allowed").endswith(f"not {method}.")
    status, headers, data = ask("HEAD", "/v1/chat/completions")
    assert status == 405 and headers["Allow"] == "POST" and data == b""  # a HEAD's answer has no body
    for method in ("GET", "POST", "DELETE"):
        status, headers, data = ask(method, "/v2/nothing", b"{}" if method != "GET" else None)
        assert status == 404 and is_error(status, headers, json.loads(data), "not_found")
    # what the base class refuses by itself: a method no do_ handles, too many headers, a request line that is not
    # HTTP/1.x (answered as HTTP/0.9 was: the body alone, and it is the same JSON)
    status, headers, error, _ = raw(server, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 501 and "BREW" in is_error(status, headers, error)
    status, headers, error, _ = raw(server, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")
    assert status == 431 and is_error(status, headers, error)
    status, _, error, _ = raw(server, b"GET / HTTP/7\r\n\r\n")
    assert status is None and "HTTP/7" in error["error"]["message"]


def test_64_concurrent_plain_http_requests_all_succeed(server):
    """A burst bigger than Python's default listen backlog of 5 (which reset most of it), streaming and not, each on
    its own connection with no retries: every one is a 200 with its whole answer."""
    port, n = server.httpd.server_address[1], 64
    results, start = [None] * n, threading.Barrier(n)

    def ask(i):
        body = json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"}], "max_tokens": 4,
                           "temperature": 0, "stream": i % 2 == 1})
        start.wait()  # all connect at once
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read().decode()
            whole = data.endswith("data: [DONE]\n\n") if i % 2 else len(json.loads(data)["choices"]) == 1
            results[i] = r.status if whole else data
        except Exception as e:  # a reset or a timeout: counted, not raised in a thread where nobody sees it
            results[i] = repr(e)

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(n)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, 60 - (time.monotonic() - began)))
    assert [r for r in results if r != 200] == [] and time.monotonic() - began < 60


def test_a_failure_inside_the_server_is_a_500_with_an_error_object_and_serving_goes_on(server, monkeypatch):
    def broken(*a):
        raise RuntimeError("boom")
    monkeypatch.setattr(server.chat, "steps", broken)
    status, _, data = server.request("/v1/chat/completions", {"messages": CONVO, "max_tokens": 4})
    assert status == 500 and json.loads(data)["error"]["type"] == "server_error", data
    status, _, data = server.request("/v1/chat/completions", {"messages": CONVO, "max_tokens": 4, "stream": True})
    events = data.decode().split("\n\n")  # the 200 was sent before the failure: the error comes as an event
    assert status == 200 and "boom" in json.loads(events[-3].removeprefix("data: "))["error"]["message"]
    assert events[-2] == "data: [DONE]"
    monkeypatch.undo()
    assert server.chat_json(messages=CONVO, max_tokens=2)[0]["choices"]


def test_concurrent_requests_each_get_their_own_answer(server):
    asks = [(m, stream) for m in ("Hi", "What is 2 + 2?", "Name a colour.") for stream in (False, True)]
    alone = {m: server.chat_json(messages=[{"role": "user", "content": m}], temperature=0, max_tokens=16)[0]
             ["choices"][0]["message"]["content"] for m, _ in asks}
    got = {}

    def ask(m, stream):
        body = dict(messages=[{"role": "user", "content": m}], temperature=0, max_tokens=16)
        got[m, stream] = joined(server.chat_stream(**body)[0])[0][0] if stream else \
            server.chat_json(**body)[0]["choices"][0]["message"]["content"]
    threads = [threading.Thread(target=ask, args=a) for a in asks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == {(m, s): alone[m] for m, s in asks}


def test_a_client_that_leaves_mid_stream_stops_the_generation(server, monkeypatch):
    steps = []
    pick = server.chat.pick
    monkeypatch.setattr(server.chat, "pick", lambda *a: steps.append(time.sleep(0.01)) or pick(*a))  # 10 ms a token
    body = json.dumps({"messages": CONVO, "temperature": 0, "max_tokens": 48, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", server.httpd.server_address[1])) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while b"data: " not in got:  # the headers, the first event; then the client hangs up
            got += s.recv(4096)
    time.sleep(1.0)  # twice what the whole answer would take
    assert len(steps) < 24  # it stopped soon after, rather than writing the rest into a closed socket
    assert server.chat_json(messages=CONVO, max_tokens=2)[0]["choices"]  # and the model's lock was let go


def test_best_of_n_with_a_reward_model(ckpts):
    s = Server(ckpt=str(ckpts / "sft.pt"), reward=str(ckpts / "rm.pt"), best_of=3)
    try:
        body, _ = s.chat_json(messages=CONVO, temperature=1.0, seed=1, n=2, max_tokens=16)
        assert len(body["choices"]) == 2 and all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
        chunks, _ = s.chat_stream(messages=CONVO, temperature=1.0, seed=1, n=2, max_tokens=16)
        assert joined(chunks, 2)[0] == [c["message"]["content"] for c in body["choices"]]
    finally:
        s.close()
    proc = run("serve.py", f"--ckpt={ckpts / 'sft.pt'}", "--best_of=4", "--port=0", check=False)
    assert proc.returncode == 1 and "--best_of=N needs" in proc.stderr
    proc = run("serve.py", f"--ckpt={ckpts / 'rm.pt'}", "--port=0", check=False)
    assert proc.returncode == 1 and "needs a chat model" in proc.stderr
