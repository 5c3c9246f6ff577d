#!/usr/bin/env bash
# The whole pipeline on the embedded data, start to finish, with the default (CPU) configs.
# Stages that exist so far: data -> pretrain -> sample. SFT, the reward model, PPO, DPO and the evaluation table
# join here as they land (see the README's status table).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

echo "== prepare: the Python standard library as a byte-level corpus"
$PY data/pycode/prepare.py

echo "== pretrain: a ~0.9M-parameter GPT, ~10 minutes on a 2-core CPU (out/pretrain)"
$PY pretrain.py "$@"

echo "== sample: the pretrained model continues Python"
$PY sample.py --ckpt=out/pretrain --prompt="def " --max_new_tokens=300 --temperature=0.6
