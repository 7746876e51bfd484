#!/bin/bash
# mlops tune --workers 1 against --workers 2 on LFW-62 at 96 px, goal 0.95, seeds 42 43 44: first
# from an empty cache (arms alternated per seed), then on the warm cache (--no-warm-start), beside
# a base checkout's single worker (optional: a clone of an earlier commit). Each line: the arm,
# the seed, the whole command's wall time, mlops tune's stage times and trial counts, the load.
# Run on an otherwise idle machine:  bash bench/workers_ab.sh [BASE_CLONE] > workers-ab.log
# (about 13 minutes on 2 cores; needs ../shared/data through scripts/offline-env.sh).
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/offline-env.sh
source scripts/offline-env.sh >/dev/null 2>&1
export TF_CPP_MIN_LOG_LEVEL=3
BASE=${1:-}
SCRATCH=$(mktemp -d)
WEIGHTS=${BENCH_WEIGHTS:-$(cd .. && pwd)/shared/data/keras/vgg16_faces_notop.weights.h5}
one() { # arm seed cache label
  local arm=$1 seed=$2 cache=$3 label=$4 workers=1
  local w=$SCRATCH/$label-$arm-$seed; mkdir -p "$w"
  if [ "$arm" = base ]; then export PYTHONPATH=$BASE; else unset PYTHONPATH; workers=${arm#w}; fi
  local s e rc
  s=$(date +%s.%N)
  MLOPS_WORKERS=$workers .venv/bin/mlops tune models/face_vgg16 --weights "$WEIGHTS" --set data.source=lfw \
    --set data.input_size=96 --goal 0.95 --max-trials 40 --timeout 1800 --seed "$seed" --cache-dir "$cache" \
    --runs-dir "$w/runs" --storage "sqlite:///$w/optuna.db" --tracking-uri "sqlite:///$w/mlflow.db" \
    --no-warm-start --study-name "s$seed" > "$w/log" 2>&1
  rc=$?
  e=$(date +%s.%N)
  echo "$label $arm seed=$seed rc=$rc wall=$(echo "$e - $s" | bc | cut -c1-6) $(grep '^time:' "$w/log")" \
    "$(grep '^trials:' "$w/log" | cut -d' ' -f2-11) load=$(cut -d' ' -f1 /proc/loadavg) $(date +%H:%M:%S)"
}
orders=("w1 w2" "w2 w1" "w1 w2")
for i in 0 1 2; do
  seed=$((42 + i))
  for arm in ${orders[$i]}; do one "$arm" "$seed" "$SCRATCH/cache-$arm-$seed" cold; rm -rf "$SCRATCH/cache-$arm-$seed"; done
done
WARM=$SCRATCH/cache-warm
one w1 42 "$WARM" warm-up > /dev/null  # fills the cache
for seed in 42 43 44; do
  for arm in ${BASE:+base} w1 w2; do one "$arm" "$seed" "$WARM" warm; done
done
rm -rf "$SCRATCH"
