#!/usr/bin/env bash
# The whole pipeline on the embedded assistant world, start to finish, with the default (CPU) recipes:
#   prepare -> pretrain -> sft -> label -> reward -> ppo, rloo, grpo -> dpo -> evaluate -> plot
#
#   bash run.sh            # the real run: outputs in out/, comparisons in data/assistant/ (~9 minutes, 2 CPU cores)
#   bash run.sh --seed=1   # another seed of the whole thing (the world and every stage): out/seed_1/, its data inside
#   bash run.sh --tiny     # every stage for a few steps on a tiny model, in out/tiny/ (a test runs this)
#   OUT=DIR bash run.sh    # everything, the world's files included, in DIR
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-} TINY=0 SEED=0
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        --seed=*) SEED=${arg#--seed=} ;;
        *) echo "run.sh: unknown argument '$arg' (expected --seed=N and/or --tiny)" >&2; exit 2 ;;
    esac
done
if ! [[ "$SEED" =~ ^[0-9]+$ ]]; then
    echo "run.sh: --seed must be a non-negative integer, got '$SEED'; nothing was written" >&2; exit 2
fi
OUT=${OUT_DIR:-out/seed_$SEED} DATA=$OUT/data  # $OUT, if set, holds everything: the outputs and the world's files
if [[ $SEED == 0 && -z $OUT_DIR ]]; then OUT=out DATA=data/assistant; fi
S=--seed=$SEED  # the world's seed and every stage's
PRETRAIN=() SFT=() LABEL=(--max_new_tokens=64) REWARD=() PPO=() DPO=() EVAL=(--max_new_tokens=64)
if [[ $TINY == 1 ]]; then  # the same commands, each cut to seconds; nothing outside out/tiny is touched
    OUT=${OUT_DIR:-out/tiny}
    DATA=$OUT/data
    PRETRAIN=(--n_layer=2 --n_head=2 --n_embd=32 --max_iters=20 --eval_interval=10 --eval_iters=2 --warmup_iters=2)
    SFT=(--epochs=0.25 --batch_size=256 --eval_interval=10)
    LABEL=(--max_new_tokens=8) REWARD=(--batch_prompts=2)
    PPO=(--max_iters=2 --batch_size=16 --max_new_tokens=8) DPO=(--epochs=1 --batch_size=8)
    EVAL=(--max_new_tokens=8 --best_of=2)
fi

stage() { echo; echo "== $1"; SECONDS=0; }
took() { echo "-- $1 took ${SECONDS}s"; }

stage "prepare: the assistant world (corpus, demonstrations, prompts)"
$PY data/assistant/prepare.py --out_dir=$DATA $S
took prepare

stage "pretrain: a 0.85M-parameter GPT on the world's prose ($OUT/pretrain)"
$PY pretrain.py --config=config/pretrain_assistant.json --data_dir=$DATA --out_dir=$OUT/pretrain $S "${PRETRAIN[@]}" \
    | grep --line-buffered -E "val_loss|^model"
took pretrain

stage "sft: fine-tune on the demonstrations ($OUT/sft)"
$PY sft.py --data_dir=$DATA --init_from=$OUT/pretrain --out_dir=$OUT/sft $S "${SFT[@]}" | grep --line-buffered -E "val_loss|^data"
took sft

stage "label: 8 answers per prompt from SFT and 1 from the prompted base model, ranked ($DATA/prefs_*.jsonl)"
$PY sample.py --ckpt=$OUT/sft --prompts=$DATA/prompts_label.jsonl --num_samples=8 --temperature=1 \
    --out=$OUT/samples.jsonl $S "${LABEL[@]}"
$PY sample.py --ckpt=$OUT/pretrain --few_shot=3 --demos=$DATA/sft_train.jsonl --prompts=$DATA/prompts_label.jsonl \
    --num_samples=1 --temperature=1 --out=$OUT/samples_gpt.jsonl $S "${LABEL[@]}"
$PY data/assistant/label.py --samples=$OUT/samples.jsonl,$OUT/samples_gpt.jsonl --out_dir=$DATA $S
took label

stage "reward: the reward model on the comparisons ($OUT/reward)"
$PY reward.py --data_dir=$DATA --init_from=$OUT/sft --out_dir=$OUT/reward $S "${REWARD[@]}" \
    | grep --line-buffered -E "^data|^reward model"
took reward

stage "ppo: the SFT policy against the reward model, KL-penalised ($OUT/ppo)"
$PY ppo.py --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward --out_dir=$OUT/ppo $S "${PPO[@]}" \
    | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
took ppo

for est in rloo grpo; do  # the same rollouts and RM, no value model: critic-free RL (ppo.py 15-19)
    stage "$est: the SFT policy against the reward model, 4 answers a prompt, no value model ($OUT/$est)"
    $PY ppo.py --estimator=$est --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward --out_dir=$OUT/$est $S \
        "${PPO[@]}" | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
    took $est
done

stage "dpo: the SFT policy on the same comparisons, no reward model ($OUT/dpo)"
$PY dpo.py --data_dir=$DATA --init_from=$OUT/sft --out_dir=$OUT/dpo $S "${DPO[@]}" | grep --line-buffered -E "^data|^dpo"
took dpo

stage "evaluate: gold score and win rate against SFT on held-out prompts ($OUT/eval/results.json)"
$PY evaluate.py --policies=$OUT/pretrain,$OUT/sft,$OUT/ppo,$OUT/rloo,$OUT/grpo,$OUT/dpo --reward=$OUT/reward \
    --data_dir=$DATA --snapshots=$OUT/ppo --out_dir=$OUT/eval $S "${EVAL[@]}"
took evaluate

stage "plot: learning curves, RL curves, over-optimisation, win rates, failure rates ($OUT/plots/*.png)"
$PY plot.py --out_dir=$OUT --to=$OUT/plots
took plot
