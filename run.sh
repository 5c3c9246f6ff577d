#!/usr/bin/env bash
# The whole pipeline on the embedded assistant world, start to finish, with the default (CPU) recipes:
#   prepare -> pretrain -> sft -> label -> reward -> ppo -> distill -> evaluate -> plot
#   (InstructGPT's, with best-of-8 beside; distill: context distillation, so that PPO's gains hold in a conversation)
#
#   bash run.sh            # the real run: outputs in out/, comparisons in data/assistant/ (about 15 minutes, 2 cores)
#   bash run.sh --seed=1   # another seed of the whole thing (the world and every stage): out/seed_1/, its data inside
#   bash run.sh --tiny     # every stage for a few steps on a tiny model and fewer prompts, in out/tiny/
#   bash run.sh --full     # and the other rows, into the same results.json: dpo (the same comparisons, no RM),
#                          # sft_good (SFT on ideal demonstrations: what perfect demonstrators alone would do), rft
#                          # (SFT continued on the RM's best of 8), ppo_ptx (PPO-ptx), rloo and grpo (critic-free RL),
#                          # grpo_verifier and ppo_rm_verifier (RLVR: a verifier's reward, alone and beside the RM),
#                          # ppo_r2 (iterated RLHF: the PPO policy's answers ranked, an RM on both rounds, PPO again):
#                          # about three times the time
#   bash run.sh --frontier # and the gold-versus-KL frontier on this seed (frontier.py, out/frontier/): PPO, RLOO and
#                          # GRPO at --betas=0,0.03,0.1,0.3, DPO at --dpo_betas=0.01,0.03,0.1,0.3, best-of-n to 64,
#                          # proxy RMs on a quarter and a half of the comparisons with PPO against each (two jobs at
#                          # a time, each on half the cores): about 75 minutes more on 2 CPU cores
#   OUT=DIR bash run.sh    # everything, the world's files included, in DIR
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-} TINY=0 SEED=0 FULL=0 FRONTIER=0 BETAS=0,0.03,0.1,0.3 DPO_BETAS=0.01,0.03,0.1,0.3
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        --full) FULL=1 ;;
        --frontier) FRONTIER=1 ;;
        --seed=*) SEED=${arg#--seed=} ;;
        --betas=*) BETAS=${arg#--betas=} ;;
        --dpo_betas=*) DPO_BETAS=${arg#--dpo_betas=} ;;
        *) echo "run.sh: unknown argument '$arg' (expected --seed=N, --tiny, --full, --frontier, --betas=LIST," \
                "--dpo_betas=LIST)" >&2; exit 2 ;;
    esac
done
if ! [[ "$SEED" =~ ^[0-9]+$ ]]; then
    echo "run.sh: --seed must be a non-negative integer, got '$SEED'; nothing was written" >&2; exit 2
fi
NUMBERS='^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$'  # a comma-separated list of numbers >= 0
if ! [[ $BETAS =~ $NUMBERS ]]; then
    echo "run.sh: --betas must be a comma-separated list of KL coefficients >= 0 (as 0,0.03,0.1,0.3), got '$BETAS';" \
         "nothing was written" >&2; exit 2
fi
if ! [[ $DPO_BETAS =~ $NUMBERS ]] || [[ ,$DPO_BETAS, =~ ,0*(\.0*)?, ]]; then
    echo "run.sh: --dpo_betas must be a comma-separated list of DPO betas > 0 (as 0.01,0.03,0.1,0.3), got" \
         "'$DPO_BETAS'; nothing was written" >&2; exit 2
fi
OUT=${OUT_DIR:-out/seed_$SEED} DATA=$OUT/data  # $OUT, if set, holds everything: the outputs and the world's files
if [[ $SEED == 0 && -z $OUT_DIR ]]; then OUT=out DATA=data/assistant; fi
S=--seed=$SEED  # the world's seed and every stage's
PTX=0.1         # PPO-ptx's pretraining-loss coefficient, chosen by measurement (docs/experiments.md "PPO-ptx")
PRETRAIN=() SFT=() LABEL=(--max_new_tokens=64) REWARD=() PPO=() DISTILL=() DSFT=() DPO=() RFT=()
EVAL=(--max_new_tokens=64) FRONT=()
if [[ $TINY == 1 ]]; then  # the same commands, each cut to seconds; nothing outside out/tiny is touched
    OUT=${OUT_DIR:-out/tiny}
    DATA=$OUT/data
    PRETRAIN=(--n_layer=2 --n_head=2 --n_embd=32 --max_iters=20 --eval_interval=10 --eval_iters=2 --warmup_iters=2)
    SFT=(--epochs=0.25 --batch_size=256 --grad_accum=1 --eval_interval=10)
    RFT=(--epochs=1 --batch_size=2 --grad_accum=2)
    DISTILL=(--max_new_tokens=8 --temperature=1) DSFT=(--batch_size=2 --grad_accum=2)
    LABEL=(--max_new_tokens=8) REWARD=(--batch_prompts=2)
    PPO=(--max_iters=2 --vf_warmup=1 --batch_size=16 --max_new_tokens=8) DPO=(--epochs=1 --batch_size=8)
    EVAL=(--max_new_tokens=8 --best_of=2) FRONT=(--max_new_tokens=8 --best_of=2 --kl_samples=1)
fi

stage() { echo; echo "== $1"; SECONDS=0; }
took() { echo "-- $1 took ${SECONDS}s"; }

stage "prepare: the assistant world (corpus, demonstrations, prompts)"
$PY data/assistant/prepare.py --out_dir=$DATA $S
if [[ $TINY == 1 ]]; then  # the first rows of the large files (each row drawn at random: every family is in them)
    for f in prompts_rl:200 prompts_later:200 sft_train:1000 good/sft_train:1000 prompts_label:800 prompts_eval:120; do
        head -n ${f#*:} $DATA/${f%:*}.jsonl > $DATA/tiny.tmp && mv $DATA/tiny.tmp $DATA/${f%:*}.jsonl
    done
fi
took prepare

stage "pretrain: a 0.85M-parameter GPT on the world's prose ($OUT/pretrain)"
$PY pretrain.py --config=config/pretrain_assistant.json --data_dir=$DATA --out_dir=$OUT/pretrain $S "${PRETRAIN[@]}" \
    | grep --line-buffered -E "val_loss|^model"
took pretrain

stage "sft: fine-tune on the demonstrations ($OUT/sft)"
$PY sft.py --data_dir=$DATA --init_from=$OUT/pretrain --out_dir=$OUT/sft $S "${SFT[@]}" | grep --line-buffered -E "val_loss|^data"
took sft

stage "label: 8 answers per prompt from SFT and 1 from the prompted base model, ranked ($DATA/prefs_*.jsonl)"
# SFT's answers at temperature 0.7, not 1: at 1 this small model garbles a word in about one answer in 25, and
# an RM that cannot check a fact learns from them that a whole answer is riskier than half of one (label.py)
$PY sample.py --ckpt=$OUT/sft --prompts=$DATA/prompts_label.jsonl --num_samples=8 --temperature=0.7 \
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

stage "distill: PPO's answers to each later question alone, taught in its conversation ($OUT/distill)"
# context distillation (distill.py): RL's gains are made on first turns and do not carry to turns 3-5; the recipe
# (a constant 1e-4, no weight decay; one epoch over the composed conversations) chosen in docs/experiments.md,
# "Conversations, fourteenth try" and "fifteenth try"; the RM breaks the teacher's near-ties ("Near-ties"); the
# weights averaged over the last half of the steps, so that the record order matters less ("Tail average")
$PY distill.py --init_from=$OUT/ppo --reward=$OUT/reward --data_dir=$DATA --out_dir=$OUT/distill_data $S \
    "${DISTILL[@]}" | grep -E "^sft_|^near-ties"
$PY sft.py --data_dir=$OUT/distill_data --init_from=$OUT/ppo --out_dir=$OUT/distill --epochs=1 --learning_rate=1e-4 \
    --min_lr=1e-4 --warmup_iters=0 --weight_decay=0 --tail_average=0.5 $S "${DSFT[@]}" \
    | grep --line-buffered -E "val_loss|^data"
took distill

POLICIES=$OUT/pretrain,$OUT/sft,$OUT/ppo,$OUT/distill REWARDS=$OUT/reward PREFS=""
if [[ $FULL == 1 ]]; then
    stage "dpo: the SFT policy on the same comparisons, no reward model ($OUT/dpo)"
    $PY dpo.py --data_dir=$DATA --init_from=$OUT/sft --out_dir=$OUT/dpo $S "${DPO[@]}" \
        | grep --line-buffered -E "^data|^dpo"
    took dpo

    stage "sft_good: SFT on the same conversations, every answer the ideal one ($OUT/sft_good)"
    $PY sft.py --data_dir=$DATA/good --init_from=$OUT/pretrain --out_dir=$OUT/sft_good $S "${SFT[@]}" \
        | grep --line-buffered -E "val_loss|^data"
    took sft_good

    stage "rft: SFT continued on the RM's best of 8 SFT answers to each labeling prompt (rejection sampling, $OUT/rft)"
    mkdir -p $OUT/rft_data && cp $DATA/sft_val.jsonl $DATA/meta.json $OUT/rft_data/
    $PY sample.py --ckpt=$OUT/sft --prompts=$DATA/prompts_label.jsonl --best_of=8 --reward=$OUT/reward \
        --temperature=1 --out=$OUT/rft_data/sft_train.jsonl $S "${LABEL[@]}"
    $PY sft.py --data_dir=$OUT/rft_data --init_from=$OUT/sft --out_dir=$OUT/rft --epochs=2 --learning_rate=3e-4 \
        --warmup_iters=5 $S "${RFT[@]}" | grep --line-buffered -E "val_loss|^data"
    took rft

    stage "ppo_ptx: PPO with the pretraining loss mixed in, InstructGPT's PPO-ptx ($OUT/ppo_ptx)"
    $PY ppo.py --ptx_coef=$PTX --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward --out_dir=$OUT/ppo_ptx \
        $S "${PPO[@]}" | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
    took ppo_ptx

    for est in rloo grpo; do  # the same rollouts and RM, no value model: critic-free RL (ppo.py 15-19)
        stage "$est: the SFT policy against the reward model, 4 answers a prompt, no value model ($OUT/$est)"
        $PY ppo.py --estimator=$est --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward --out_dir=$OUT/$est \
            $S "${PPO[@]}" | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
        took $est
    done

    # RLVR (ppo.py 21): a reward a program computes from the prompt's text (data/assistant/verifier.py: sums,
    # counts, reversals, the system message's form). GRPO on the verifier alone, on the prompts it can check
    # (DeepSeekMath's setting); PPO on the RM plus the verifier (Tülu 3's mix)
    V=data/assistant/verifier.py
    stage "grpo_verifier: GRPO on the verifier's reward alone ($OUT/grpo_verifier)"
    $PY ppo.py --estimator=grpo --reward=$V --data_dir=$DATA --init_from=$OUT/sft --out_dir=$OUT/grpo_verifier \
        $S "${PPO[@]}" | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
    took grpo_verifier
    stage "ppo_rm_verifier: PPO on the RM's score plus the verifier's ($OUT/ppo_rm_verifier)"
    $PY ppo.py --reward=$OUT/reward,$V --data_dir=$DATA --init_from=$OUT/sft --out_dir=$OUT/ppo_rm_verifier \
        $S "${PPO[@]}" | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
    took ppo_rm_verifier

    # Iterated RLHF (InstructGPT's comparisons came partly from earlier RL policies; Anthropic's HH "online" rounds):
    # the round-1 PPO policy's answers to the labeling prompts, ranked; an RM on rounds 1 and 2; PPO again from SFT
    # (only the RM differs from round 1, so what round 2 changes is what its comparisons taught)
    R2=$DATA/round2 R12=$DATA/rounds_1_2
    stage "round 2: 9 answers per prompt from the PPO policy, ranked ($R2/prefs_*.jsonl); an RM on both rounds"
    $PY sample.py --ckpt=$OUT/ppo --prompts=$DATA/prompts_label.jsonl --num_samples=9 --temperature=1 \
        --out=$OUT/samples_r2.jsonl $S "${LABEL[@]}"
    $PY data/assistant/label.py --samples=$OUT/samples_r2.jsonl --out_dir=$R2 $S
    mkdir -p $R12
    for split in train val; do cat $DATA/prefs_$split.jsonl $R2/prefs_$split.jsonl > $R12/prefs_$split.jsonl; done
    cp $DATA/sft_train.jsonl $DATA/prompts_rl.jsonl $R12/  # reward.py's shift and unit: demonstrations, RL prompts
    $PY reward.py --data_dir=$R12 --init_from=$OUT/sft --out_dir=$OUT/reward_r2 $S "${REWARD[@]}" \
        | grep --line-buffered -E "^data|^reward model"
    took "round 2 comparisons and RM"

    stage "ppo_r2: the SFT policy against the round-2 reward model ($OUT/ppo_r2)"
    $PY ppo.py --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward_r2 --out_dir=$OUT/ppo_r2 $S "${PPO[@]}" \
        | grep --line-buffered -E "^models|^ppo|step [0-9]*0/"
    took ppo_r2
    POLICIES+=,$OUT/dpo,$OUT/sft_good,$OUT/rft,$OUT/ppo_ptx,$OUT/rloo,$OUT/grpo,$OUT/grpo_verifier,$OUT/ppo_rm_verifier
    POLICIES+=,$OUT/ppo_r2
    REWARDS+=,$OUT/reward_r2 PREFS=$R2/prefs_val.jsonl
fi

stage "evaluate: gold score and win rate against SFT on held-out prompts ($OUT/eval/results.json)"
$PY evaluate.py --policies=$POLICIES --reward=$REWARDS --prefs=$PREFS \
    --data_dir=$DATA --snapshots=$OUT/ppo --out_dir=$OUT/eval $S "${EVAL[@]}"
took evaluate

if [[ $FRONTIER == 1 ]]; then
    # The gold-versus-KL frontier (frontier.py; Gao et al. 2022): from the same SFT model, each method at several KL
    # coefficients against the same RM, and PPO against proxy RMs trained on less of the same comparisons (their RM
    # data experiment). Two jobs at a time, each on half the cores (small models use two processes better than two
    # threads); each job's output goes to its log in $F/logs/.
    F=$OUT/frontier RMS=$OUT/reward JOBS=() RUNS=()
    THREADS=$(( $(getconf _NPROCESSORS_ONLN) / 2 )); (( THREADS >= 1 )) || THREADS=1
    stage "frontier: ppo, rloo, grpo at beta $BETAS, dpo at beta $DPO_BETAS, PPO against RMs on 1/4 and 1/2 of the data"
    mkdir -p $F/logs
    for part in 4 2; do  # the first 1/part of the training comparisons; the same held-out ones, shift and unit data
        D=$F/data_q$part
        mkdir -p $D && cp $DATA/prefs_val.jsonl $DATA/sft_train.jsonl $DATA/prompts_rl.jsonl $D/
        head -n $(( $(wc -l < $DATA/prefs_train.jsonl) / part )) $DATA/prefs_train.jsonl > $D/prefs_train.jsonl
        JOBS+=("{ $PY reward.py --data_dir=$D --init_from=$OUT/sft --out_dir=$F/reward_q$part $S ${REWARD[*]} && $PY \
ppo.py --data_dir=$DATA --init_from=$OUT/sft --reward=$F/reward_q$part --out_dir=$F/ppo_q$part $S ${PPO[*]}; } \
> $F/logs/q$part.log 2>&1")
        RUNS+=($F/ppo_q$part) RMS+=,$F/reward_q$part
    done
    for est in gae grpo rloo; do  # the longest jobs first, so that the two lanes end together
        for b in ${BETAS//,/ }; do
            name=${est/gae/ppo}_b$b
            JOBS+=("$PY ppo.py --estimator=$est --beta=$b --data_dir=$DATA --init_from=$OUT/sft --reward=$OUT/reward \
--out_dir=$F/$name $S ${PPO[*]} > $F/logs/$name.log 2>&1")
            RUNS+=($F/$name)
        done
    done
    for b in ${DPO_BETAS//,/ }; do
        JOBS+=("$PY dpo.py --beta=$b --data_dir=$DATA --init_from=$OUT/sft --out_dir=$F/dpo_b$b $S ${DPO[*]} \
> $F/logs/dpo_b$b.log 2>&1")
        RUNS+=($F/dpo_b$b)
    done
    lanes() {  # the commands given, two at a time; stop with a pointer to the logs if one fails
        printf '%s\0' "$@" | OMP_NUM_THREADS=$THREADS xargs -0 -n 1 -P 2 bash -c || {
            echo "run.sh: a frontier job failed; its log in $F/logs/ says why" >&2; exit 1; }
    }
    lanes "${JOBS[@]}"
    took "frontier's ${#JOBS[@]} trainings"

    stage "frontier: gold and KL to SFT of every run and snapshot, best-of-n against each RM, the fits ($F)"
    FR="$PY frontier.py --sft=$OUT/sft --data_dir=$DATA --out_dir=$F $S ${FRONT[*]}"
    ODD=$(IFS=,; echo "${RUNS[*]:0:${#RUNS[@]}/3}") EVEN=$(IFS=,; echo "${RUNS[*]:${#RUNS[@]}/3}")
    # two processes measure a share each (best-of-n's 64 samples per prompt are the larger share's weight); the
    # points are cached (frontier.py 8), so the last call only gathers them, fits and writes frontier.json
    lanes "$FR --runs=$ODD --reward=$RMS > $F/logs/measure_1.log 2>&1" \
          "$FR --runs=$EVEN --reward=$RMS --best_of=0 > $F/logs/measure_2.log 2>&1"
    $FR --runs=$(IFS=,; echo "${RUNS[*]}") --reward=$RMS > $F/logs/frontier.log
    sed -n '/^Gao/,$p' $F/logs/frontier.log
    took "frontier's measurements"
fi

stage "plot: learning curves, RL curves, over-optimisation, win rates, failure rates ($OUT/plots/*.png)"
$PY plot.py --out_dir=$OUT --to=$OUT/plots
took plot
