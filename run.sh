#!/usr/bin/env bash
# The whole pipeline on the embedded assistant world, start to finish, with the default (CPU) recipes.
# Stages so far: prepare -> pretrain -> sft -> label -> reward -> evaluate. PPO, DPO and best-of-n join here as they
# land (see the README's status table).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

stage() { echo; echo "== $1"; SECONDS=0; }
took() { echo "-- $1 took ${SECONDS}s"; }

stage "prepare: the assistant world (corpus, demonstrations, prompts)"
$PY data/assistant/prepare.py
took prepare

stage "pretrain: a 0.85M-parameter GPT on the world's prose (out/pretrain)"
$PY pretrain.py --config=config/pretrain_assistant.json | grep --line-buffered -E "val_loss|^model"
took pretrain

stage "sft: fine-tune on the demonstrations (out/sft)"
$PY sft.py | grep --line-buffered -E "val_loss|^data"
took sft

stage "label: 4 answers per prompt from the SFT model, ranked by the labeler (data/assistant/prefs_*.jsonl)"
$PY sample.py --ckpt=out/sft --prompts=data/assistant/prompts_label.jsonl --num_samples=4 --temperature=1 \
    --max_new_tokens=64 --out=out/samples.jsonl
$PY data/assistant/label.py --samples=out/samples.jsonl
took label

stage "reward: the reward model on the comparisons (out/reward)"
$PY reward.py | grep --line-buffered -E "^data|^reward model"
took reward

stage "evaluate: the labeler's gold score on held-out prompts (out/eval/results.json)"
$PY evaluate.py --policies=out/pretrain,out/sft --reward=out/reward
took evaluate
