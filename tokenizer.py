"""
Tokenizers and the chat format.

Two tiktoken encodings behind one interface, both extended with the same chat special tokens:
  bytes  the 256 byte values are the tokens: no download, no training; the default for the embedded data.
  gpt2   GPT-2's BPE (tiktoken downloads it once; set GPT2_TIKTOKEN=path/to/gpt2.tiktoken to read a local copy).

Special tokens, appended after the ordinary ones (for gpt2 <|endoftext|> keeps 50256 and the rest take 50257..,
rows that padding the vocabulary to 50304 leaves free):
  <|endoftext|>  separates documents in pretraining text
  <|system|> <|user|> <|assistant|>  open a message of that role;  <|end|>  closes any message
  <|pad|>  fills batches; never EOS, never trained on

A conversation renders as
  <|system|>...<|end|><|user|>...<|end|><|assistant|>...<|end|><|user|>...<|end|><|assistant|>...<|end|>
Message content is always encoded as plain text: a user who types "<|assistant|>" gets those characters, never the
role token. For SFT, `render_conversation` returns (ids, targets) aligned for next-token prediction:
targets[t] = ids[t + 1] when ids[t + 1] is assistant content or the <|end|> closing an assistant message, else -1.
So model(ids, targets) trains on exactly those tokens, and the model learns to stop.
"""

import os

import tiktoken
from tiktoken.load import load_tiktoken_bpe

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"]
ROLES = ("system", "user", "assistant")
# tiktoken's gpt2 pre-tokenizer regex
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Tokenizer:

    def __init__(self, name):
        if name == "bytes":
            ranks = {bytes([i]): i for i in range(256)}
            first_special, self.vocab_size = 256, 320  # 262 used, padded to a multiple of 64
        elif name == "gpt2":
            local = os.environ.get("GPT2_TIKTOKEN")
            ranks = load_tiktoken_bpe(local) if local else tiktoken.get_encoding("gpt2")._mergeable_ranks
            first_special, self.vocab_size = 50256, 50304
        else:
            raise ValueError(f"unknown tokenizer {name!r}; valid tokenizers: bytes, gpt2")
        self.name = name
        self.special = {s: first_special + i for i, s in enumerate(SPECIALS)}
        self.enc = tiktoken.Encoding(name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                     special_tokens=self.special)
        self.n_ordinary = first_special
        self.eot_id, self.system_id, self.user_id, self.assistant_id, self.end_id, self.pad_id = \
            (self.special[s] for s in SPECIALS)
        self.role_id = {"system": self.system_id, "user": self.user_id, "assistant": self.assistant_id}

    def encode(self, text):
        """Plain text -> ids. Special-token strings in text stay ordinary characters."""
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        """ids -> text. Special tokens print as their names (but <|pad|> as nothing); ids in the padded, unused
        rows of the vocabulary print as nothing rather than crash (an untrained model may sample them)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """ids -> the bytes decode turns into text. One token can hold part of a character, so a stream of tokens
        (serve.py) decodes these bytes incrementally, never a token's text alone."""
        names = {v: k for k, v in self.special.items()}
        names[self.pad_id] = ""
        out, run = [], []
        for i in ids:
            i = int(i)
            if i < self.n_ordinary:
                run.append(i)
                continue
            out.append(self.enc.decode_bytes(run))
            run = []
            out.append(names.get(i, "").encode())
        out.append(self.enc.decode_bytes(run))
        return b"".join(out)

    def render_conversation(self, messages):
        """messages [{"role", "content"}, ...] -> (ids, targets), two lists of equal length (see module docstring)."""
        ids, trained = [], []  # trained[i]: is ids[i] a token SFT learns to produce?
        for m in messages:
            role, content = m["role"], m["content"]
            if role not in ROLES:
                raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
            body = self.encode(content) + [self.end_id]
            ids += [self.role_id[role]] + body
            trained += [False] + [role == "assistant"] * len(body)  # assistant content and its closing <|end|>
        targets = [t if tr else -1 for t, tr in zip(ids[1:], trained[1:])] + [-1]
        return ids, targets

    def render_prompt(self, messages):
        """A conversation that ends with a user turn -> ids ending with <|assistant|>, ready for generation."""
        ids, _ = self.render_conversation(messages)
        return ids + [self.assistant_id]


_cache = {}


def get_tokenizer(name):
    """The tokenizer called name ("bytes" or "gpt2"), built once per process and GPT2_TIKTOKEN (the file it reads)."""
    key = (name, os.environ.get("GPT2_TIKTOKEN"))
    if key not in _cache:
        _cache[key] = Tokenizer(name)
    return _cache[key]
