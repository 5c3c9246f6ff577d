#!/usr/bin/env bash
# The whole pipeline on the embedded assistant world, start to finish, with the default (CPU) recipes.
# Stages so far: prepare -> pretrain -> sft -> evaluate. The reward model, PPO, DPO and best-of-n join here as they
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

stage "evaluate: the labeler's gold score on held-out prompts (out/eval/results.json)"
$PY evaluate.py --policies=out/pretrain,out/sft
took evaluate
