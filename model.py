"""
The GPT: a decoder-only transformer in the GPT-2 layout, small enough to read in one sitting.

    from model import GPT, GPTConfig, PRESETS
    model = GPT(GPTConfig(**PRESETS["gpt2"]))          # 124M, random init
    model = GPT.from_pretrained("gpt2")               # OpenAI's weights (downloaded once)
    model = GPT.from_pretrained("path/to/hf_dir")     # a local Hugging Face GPT-2 directory
    logits, loss = model(idx, targets)                # loss ignores targets == -1
    out, logprobs = model.generate(idx, 64, temperature=0.7, eos_id=tok.end_id, attention_mask=mask)

Details implemented here (numbers are referenced in the code):
 1. Pre-LayerNorm blocks, learned absolute positions, GELU MLP 4x wide, weight tying of the token embedding and the
    output head (GPT-2; Radford et al. 2019). GELU is the tanh approximation GPT-2 was trained with, so that GPT-2's
    weights give GPT-2's logits (HF's "gelu_new").
 2. GPT-2's parameter names, so a GPT-2 state_dict maps one to one; HF stores the four projection matrices as
    Conv1D (in, out) and we transpose them on load.
 3. Attention through F.scaled_dot_product_attention (flash / memory-efficient kernels on GPUs). On a CPU a padded
    batch (any call with a mask: training and scoring alike) and a generation's decode steps (its prefill stays
    fused) take the plain ops instead (q k^T / sqrt(hs), the mask, softmax in fp32, times v): with a mask at this
    repository's head sizes PyTorch's fused CPU kernel is slower, its backward several times (docs/experiments.md,
    "CPU attention"). The same math either way.
 4. Padding: a batch may be left-padded (prompts of different lengths). `attention_mask` (B, S) marks real tokens;
    position ids count from each row's first real token, and no query ever attends to a pad key. A pad query is
    allowed to attend to itself only, so its softmax is finite (its output is never used).
 5. Generation with a KV cache preallocated for prompt + new tokens; the prompts are prefilled in one pass and each
    step feeds one token per row. A step has fixed shapes (it attends over the whole cache, masked to the columns
    written so far) and its inputs are updated in place, so on a GPU it is recorded once as a CUDA graph and
    replayed: at small batches launching a step's kernels one by one from Python costs more than running them (on a
    CPU the same tensors go through an eager call). Rows that emit `eos_id` are finished: they get `pad_id` from then
    on while the other rows go on, and generation stops early when every row is done. Once half the rows in the
    batch have finished they are dropped from it (cache and state compacted, a new graph recorded), so answers that
    end early stop costing compute: at most log2(B) compactions per call. temperature=0 is greedy.
 6. Log-probs of the sampled tokens under the distribution actually sampled from (logits / T, after any top-k /
    top-p filtering) are returned too: PPO needs them (and uses T > 0 with no top-k / top-p).
 7. The loss is the mean cross-entropy over targets that are not -1, and 0 (not NaN) when none are.
 8. Size presets: GPT-2 124M..1.5B (Radford et al. 2019) and GPT-3 Small..XL (Brown et al. 2020, Table 2.1), with the
    vocabulary padded from 50257 to 50304 (a multiple of 64, faster matmuls; the spare rows hold the chat tokens).
"""

import json
import math
import os
import struct
import urllib.request
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024   # context length (learned positions)
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64; chat tokens live in the spare rows
    n_layer: int = 12        # transformer blocks
    n_head: int = 12         # attention heads
    n_embd: int = 768        # residual stream width
    dropout: float = 0.0     # residual / attention / embedding dropout
    bias: bool = True        # biases in Linear and LayerNorm, as GPT-2


GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # OpenAI's weights that from_pretrained downloads

# (8) shapes only; block_size is the context the model was trained with
PRESETS = {
    "gpt2":        dict(n_layer=12, n_head=12, n_embd=768,  block_size=1024),   # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),   # 350M
    "gpt2-large":  dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024),   # 774M
    "gpt2-xl":     dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024),   # 1558M
    "gpt3-small":  dict(n_layer=12, n_head=12, n_embd=768,  block_size=2048),   # 125M
    "gpt3-medium": dict(n_layer=24, n_head=16, n_embd=1024, block_size=2048),   # 350M
    "gpt3-large":  dict(n_layer=24, n_head=16, n_embd=1536, block_size=2048),   # 760M
    "gpt3-xl":     dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048),   # 1.3B
}
# GPT-3 XL: Table 2.1 says 24 heads of 128 dims, which does not divide d_model = 2048; we keep d_head = 128 (16 heads).
# The head count does not change the parameter count.


def preset(name, **overrides):
    """A GPTConfig for a named preset; unknown names fail with the list of valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, mask=None, cache=None, start=0):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None and torch.is_tensor(start):  # (5) a decode step: write column `start` (a (1,) tensor,
            k_cache, v_cache = cache                      # so the step's kernels never change), attend to the whole
            k_cache.index_copy_(2, start, k.to(k_cache.dtype))  # cache; the mask hides the columns not written yet
            v_cache.index_copy_(2, start, v.to(v_cache.dtype))
            k, v = k_cache, v_cache  # (B, nh, S_max, hs)
        elif cache is not None:  # (5) write this chunk's keys/values at [start, start+T) and attend to all so far
            k_cache, v_cache = cache
            k_cache[:, :, start:start + T] = k
            v_cache[:, :, start:start + T] = v
            k, v = k_cache[:, :, :start + T], v_cache[:, :, :start + T]  # (B, nh, S, hs)
        if mask is not None and x.device.type == "cpu" and (cache is None or T == 1):  # (3) plain ops
            # the (B, nh, T, S) scores are small except in a generation's prefill (fused below); scoring without
            # gradients takes the same ops as training, so PPO's first ratio is 1 (ppo.py 9)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, T, S)
            att = att.float().masked_fill(~mask, float("-inf")).softmax(-1).to(v.dtype)
            y = F.dropout(att, self.dropout, self.training) @ v
        else:  # (3) GPUs, a CPU prefill, and mask None (an unpadded batch without cache: the causal kernel)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))  # (1) GPT-2's GELU


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, cache=None, start=0):
        x = x + self.attn(self.ln_1(x), mask, cache, start)  # (1) pre-LayerNorm residual blocks
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # (1) tied embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=False):
        """Parameters, counted once for the tied embedding; non_embedding drops the position table (as nanoGPT)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def hidden_states(self, idx, attention_mask=None, cache=None, start=0):
        """Final-LayerNorm hidden states (B, T, C) of tokens idx (B, T).

        attention_mask (B, start + T): 1 for real tokens, 0 for pads, covering the cached positions too.
        cache: per-layer (k, v) buffers of shape (B, nh, S_max, hs), filled from `start` on.
        The reward and value models put their scalar head on these states.
        """
        B, T = idx.shape
        S = start + T
        if S > self.config.block_size:
            raise ValueError(f"sequence of {S} tokens is longer than the model's context of {self.config.block_size}")
        device = idx.device
        mask = None
        if attention_mask is None and cache is None:
            pos = torch.arange(T, device=device).unsqueeze(0)  # (1, T)
        else:
            if attention_mask is None:
                attention_mask = torch.ones(B, S, dtype=torch.long, device=device)
            real = attention_mask.bool()                                        # (B, S)
            pos = (attention_mask.long().cumsum(1) - 1).clamp(min=0)[:, start:]  # (4) (B, T) from first real token
            q_idx = torch.arange(start, S, device=device).view(T, 1)
            k_idx = torch.arange(S, device=device).view(1, S)
            mask = (k_idx <= q_idx).unsqueeze(0) & real.unsqueeze(1)             # (B, T, S) causal, no pad keys
            mask = mask | (k_idx == q_idx).unsqueeze(0)                         # (4) a pad query sees itself
            mask = mask.unsqueeze(1)                                            # (B, 1, T, S) for all heads
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, None if cache is None else cache[i], start)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, attention_mask=None):
        """idx (B, T) token ids -> (logits (B, T, V), loss or None). targets (B, T), -1 where no loss is wanted."""
        logits = self.lm_head(self.hidden_states(idx, attention_mask))
        loss = None
        if targets is not None:
            # (7) sum over kept targets / their count, so an all -1 batch gives 0 instead of 0/0 = NaN
            flat = targets.reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat, ignore_index=-1,
                                   reduction="sum") / (flat != -1).sum().clamp(min=1)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eos_id=None, pad_id=None,
                 attention_mask=None, generator=None):
        """Continue each row of idx (B, T), left-padded when attention_mask (B, T) marks pads with 0.

        Returns (tokens (B, T + n), logprobs (B, n)) with n <= max_new_tokens (fewer when every row ended early).
        After a row emits eos_id, its later tokens are pad_id (default eos_id) with log-prob 0.
        """
        B, T = idx.shape
        if T + max_new_tokens > self.config.block_size:
            raise ValueError(f"prompt of {T} tokens + {max_new_tokens} new tokens exceeds the context of "
                             f"{self.config.block_size}; shorten the prompt or ask for fewer tokens")
        pad_id = eos_id if pad_id is None else pad_id
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        c, device, S = self.config, idx.device, T + max_new_tokens
        dtype = self.transformer.wte.weight.dtype
        if torch.is_autocast_enabled(device.type):  # the cache holds what attention computes in (bf16 on GPUs)
            dtype = torch.get_autocast_dtype(device.type)
        # (5) preallocated cache: per layer (k, v), each (B, nh, S, hs). Zeros, not empty: a decode step attends over
        # all of it, and the masked columns must not hold NaN garbage (0 * NaN is NaN).
        cache = [(torch.zeros(B, c.n_head, S, c.n_embd // c.n_head, device=device, dtype=dtype),
                  torch.zeros(B, c.n_head, S, c.n_embd // c.n_head, device=device, dtype=dtype))
                 for _ in range(c.n_layer)]
        tokens = torch.full((B, S), 0 if pad_id is None else pad_id, dtype=idx.dtype, device=device)
        tokens[:, :T] = idx
        logprobs = torch.zeros(B, max_new_tokens, device=device)
        active = torch.arange(B, device=device)  # (b,) the rows of idx still in the decode batch
        done = torch.zeros(B, dtype=torch.bool, device=device)  # (b,) which of those have emitted eos_id
        h = self.hidden_states(idx, attention_mask, cache, 0)[:, -1]  # (5) prefill every prompt in one pass; (B, C)
        logits = self.lm_head(h).float()  # (B, V)
        # (5) the decode state, updated in place: every step runs the same kernels on the same tensors
        tok = torch.zeros(B, 1, dtype=idx.dtype, device=device)              # the token fed, (B, 1)
        pos = attention_mask.long().sum(1, keepdim=True) - 1                 # (4) its position - 1: real tokens so far
        slot = torch.zeros(1, dtype=torch.long, device=device)               # its cache column
        key_mask = torch.zeros(B, 1, 1, S, dtype=torch.bool, device=device)  # real keys written so far
        key_mask[:, 0, 0, :T] = attention_mask.bool()

        def step(*state):  # logits (B, V) of the next token
            return self.lm_head(self._decode(*state)).float()
        replay = None
        n = 0
        for n in range(1, max_new_tokens + 1):
            if temperature == 0:
                nxt = logits.argmax(-1)
                lp = torch.log_softmax(logits, -1)
            else:
                logits = filter_logits(logits / temperature, top_k, top_p)  # (6)
                lp = torch.log_softmax(logits, -1)
                nxt = torch.multinomial(lp.exp(), 1, generator=generator).squeeze(1)
            lp = lp.gather(1, nxt.unsqueeze(1)).squeeze(1)
            if pad_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            tokens[active, T + n - 1] = nxt
            logprobs[active, n - 1] = torch.where(done, torch.zeros_like(lp), lp)
            if n == max_new_tokens:
                break
            if eos_id is not None:
                done |= nxt == eos_id
                n_done = int(done.sum())
                if n_done == done.numel():
                    break
                if 2 * n_done >= done.numel():  # (5) half the rows have finished: drop them from the batch, so
                    keep = ~done               # finished rows stop costing attention and MLP work
                    active, done, nxt = active[keep], done[keep], nxt[keep]
                    tok, pos, key_mask = tok[keep], pos[keep], key_mask[keep]
                    cache = [(k[keep], v[keep]) for k, v in cache]
                    replay = None  # new tensors: the old replay (a CUDA graph) is bound to the old ones
            # (5) the state is updated in place: replay() runs on these very tensors
            tok.copy_(nxt.unsqueeze(1))
            pos += 1
            slot.fill_(T + n - 1)
            key_mask[:, 0, 0, T + n - 1] = True
            if replay is None:  # the first step, and the first after a compaction, records the step; others replay
                logits, replay = _replayable(step, (tok, pos, key_mask, cache, slot), device)
            else:
                logits = replay()
        return tokens[:, :T + n], logprobs[:, :n]

    def _decode(self, tok, pos, key_mask, cache, slot):
        """(5) One generation step: tok (B, 1) at positions pos (B, 1), its keys / values written to cache column
        slot (1,), attending over the whole cache where key_mask (B, 1, 1, S) is set. Fixed shapes -> (B, C)."""
        x = self.transformer.wte(tok) + self.transformer.wpe(pos)
        for block, layer_cache in zip(self.transformer.h, cache):
            x = block(x, key_mask, layer_cache, slot)
        return self.transformer.ln_f(x)[:, -1]

    # HF's GPT-2 stores these four matrices as Conv1D, (in, out); nn.Linear holds (out, in) (2)
    _CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def from_pretrained(cls, name_or_dir, vocab_size=None, cache_dir=None):
        """GPT-2 weights from a local Hugging Face GPT-2 directory (config.json + model.safetensors) or a name
        (gpt2, gpt2-medium, gpt2-large, gpt2-xl) downloaded once into cache_dir (default ~/.cache/instructgpt).

        The vocabulary is padded to vocab_size (default: the file's, rounded up to a multiple of 64, so GPT-2's
        50257 becomes 50304 and a directory written by save_pretrained comes back unchanged). The spare rows start
        as the mean input embedding: the chat tokens begin as an "average word" rather than noise, so the first
        SFT steps see sane logits for them (they are trained by SFT).
        """
        path = name_or_dir
        if not os.path.isdir(path):
            path = _download_gpt2(name_or_dir, cache_dir)
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
        vocab = max(vocab_size or 0, -(-hf["vocab_size"] // 64) * 64)
        config = GPTConfig(block_size=hf["n_positions"], vocab_size=vocab, n_layer=hf["n_layer"],
                           n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True)
        sd = read_safetensors(os.path.join(path, "model.safetensors"))
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        model = cls(config)
        ours = model.state_dict()
        for k in ours:
            if k == "lm_head.weight":
                continue  # (1) tied to wte
            src = sd[k.removeprefix("transformer.")].float()
            if k.endswith(cls._CONV1D):
                src = src.t()
            if k == "transformer.wte.weight":
                src = torch.cat([src, src.mean(0, keepdim=True).expand(config.vocab_size - src.size(0), -1)])
            assert src.shape == ours[k].shape, f"{k}: {tuple(src.shape)} in the file, {tuple(ours[k].shape)} here"
            ours[k].copy_(src)
        return model

    def save_pretrained(self, path, **extra_config):
        """Write the Hugging Face GPT-2 layout that from_pretrained reads and transformers' GPT2LMHeadModel loads:
        config.json (extra_config added to it) and model.safetensors in float32, the tied output matrix stored
        once as wte, Conv1D matrices transposed, zeros for the biases of a bias=False model. Each file is
        written to a temporary name and renamed, so an interrupted export never leaves a file that looks whole."""
        c = self.config
        tensors = {}
        for k, v in self.state_dict().items():
            if k == "lm_head.weight":
                continue  # (1) HF ties it to wte
            tensors[k] = (v.t() if k.endswith(self._CONV1D) else v).float().cpu()
        for name, m in self.named_modules():  # HF's GPT-2 always has biases: a bias=False model gets zeros
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is None and name != "lm_head":
                tensors[name + ".bias"] = torch.zeros(m.weight.shape[0])
        config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
                  "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
                  "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new",  # (1)
                  "layer_norm_epsilon": 1e-5, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
                  "attn_pdrop": c.dropout, "tie_word_embeddings": True, "torch_dtype": "float32", **extra_config}
        os.makedirs(path, exist_ok=True)
        write_safetensors(os.path.join(path, "model.safetensors"), tensors)
        with open(os.path.join(path, "config.json.tmp"), "w") as f:
            json.dump(config, f, indent=2)
        os.replace(os.path.join(path, "config.json.tmp"), os.path.join(path, "config.json"))


def _replayable(fn, args, device):
    """(5) Run fn(*args) once and return (its output, replay): replay() runs fn again on the current contents of the
    same tensors args, which the caller updates in place between calls, and returns its output.

    On a GPU replay is a CUDA graph: at batch 1 a 124M model's step is ~200 small kernels, and launching them from
    Python costs more than running them. The graph holds the addresses of args and of its output (overwritten by the
    next replay), so new tensors (a compacted batch) need a new replayable. On a CPU replay calls fn(*args) with the
    same binding and writes into one output tensor, so the CPU tests check the contract the GPU's graph relies on."""
    if device.type != "cuda":
        out = fn(*args)

        def overwrite():  # one output tensor, overwritten by every replay, as the graph's static output is
            return out.copy_(fn(*args))
        return out, overwrite
    with torch.cuda.device(device):
        stream = torch.cuda.Stream()  # the warm-up runs on a side stream, as torch.cuda.graph asks
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = fn(*args)  # also fills autocast's cache of bf16 weights, so the graph only reads it
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = fn(*args)

    def replay():
        graph.replay()
        return static_out
    return out, replay


def filter_logits(logits, top_k=None, top_p=None):
    """Set to -inf every logit outside the top_k, and outside the smallest set whose probability exceeds top_p."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, -1) >= top_p  # mass before this token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path):
    """The tensors of a .safetensors file: 8 bytes of header length, a JSON header, then the raw little-endian data."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(data, dtype=_SAFETENSORS_DTYPES[info["dtype"]], count=(end - begin) //
                             _SAFETENSORS_DTYPES[info["dtype"]].itemsize, offset=begin) if end > begin else \
            torch.empty(0, dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors


def write_safetensors(path, tensors):
    """The inverse of read_safetensors: the JSON header padded with spaces to a multiple of 8 bytes (as the
    safetensors library writes it), then each tensor's bytes in order. Written to path.tmp, then renamed."""
    header, offset = {}, 0
    inv = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": inv[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for t in tensors.values():
            f.write(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    os.replace(path + ".tmp", path)


def _download_gpt2(name, cache_dir=None):
    if name not in GPT2_NAMES:
        raise ValueError(f"{name!r} is neither a directory nor a GPT-2 name (gpt2, gpt2-medium, gpt2-large, gpt2-xl)")
    path = os.path.join(cache_dir or os.path.expanduser("~/.cache/instructgpt"), name)
    os.makedirs(path, exist_ok=True)
    for fname in ("config.json", "model.safetensors"):
        dst = os.path.join(path, fname)
        if os.path.exists(dst):
            continue
        url = f"https://huggingface.co/openai-community/{name}/resolve/main/{fname}"
        print(f"downloading {url}")
        try:
            urllib.request.urlretrieve(url, dst + ".tmp")
        except OSError as e:
            raise SystemExit(f"could not download {url} ({e}); pass a local Hugging Face GPT-2 directory instead")
        os.replace(dst + ".tmp", dst)  # a broken download never leaves a file that looks complete
    return path
