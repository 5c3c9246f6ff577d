"""
Export a language-model checkpoint (pretrain, sft, ppo, dpo) to the Hugging Face GPT-2 layout, so the usual tools
can serve it and every stage here can start from it again.

    python export.py --ckpt=out/hh_ppo --out_dir=out/hh_ppo_hf
    # -> out/hh_ppo_hf/config.json + model.safetensors (float32, GPT2LMHeadModel)
    python sft.py --init_from=out/hh_ppo_hf ...        # GPT.from_pretrained reads it back, bit for bit

What a serving tool needs to know, written into config.json beside the GPT-2 fields:
  - "tokenizer": the tiktoken encoding (gpt2 or bytes) and "special_tokens": the chat tokens' ids. For gpt2 the
    ordinary ids are GPT-2's own, so GPT-2's tokenizer files work once the chat tokens are added at these ids.
  - "eos_token_id" is <|end|> (a chat model stops there), "pad_token_id" <|pad|>, "bos_token_id" <|endoftext|>.
  - the vocabulary keeps its padding (50304 rows for gpt2): the chat tokens live in rows GPT-2 never had.
A conversation is rendered as tokenizer.py describes: <|user|>...<|end|><|assistant|>, then generate to <|end|>.
"""

import os
from dataclasses import dataclass

from common import LM_STAGES, load_checkpoint, model_from_checkpoint, parse_config
from tokenizer import get_tokenizer


@dataclass
class Config:
    ckpt: str = "out/sft"        # the checkpoint to export (a run directory or a .pt file)
    out_dir: str = "out/sft_hf"  # where config.json and model.safetensors go


if __name__ == "__main__":
    cfg = parse_config(Config)
    ckpt = load_checkpoint(cfg.ckpt, stages=LM_STAGES, hint="export takes a language model, not a reward model")
    model = model_from_checkpoint(ckpt, dropout=0.0)
    tok = get_tokenizer(ckpt["tokenizer"])
    model.save_pretrained(cfg.out_dir, tokenizer=tok.name, special_tokens=tok.special, stage=ckpt["stage"],
                          bos_token_id=tok.eot_id, eos_token_id=tok.end_id, pad_token_id=tok.pad_id)
    print(f"wrote {os.path.join(cfg.out_dir, 'config.json')} and model.safetensors: {model.num_params() / 1e6:.2f}M "
          f"parameters, {ckpt['stage']} checkpoint from {cfg.ckpt}, {tok.name} tokenizer")
