#!/usr/bin/env bash
# One command from a fresh clone to a tuned, registered face classifier:
#   bash scripts/quickstart.sh [extra mlops tune flags]
# Creates .venv, installs the project, and runs the default search (Olivetti faces, goal 0.90).
# Offline (no network, ../shared/data present) it uses the data and face-pretrained VGG16
# weights from there and says so; with a network it uses Keras' ImageNet weights.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/mlops ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
fi
# shellcheck source=scripts/offline-env.sh
source scripts/offline-env.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"

weights=()
if [ -n "${MLOPS_FACE_WEIGHTS:-}" ]; then
  weights=(--weights "$MLOPS_FACE_WEIGHTS")
fi
set +e
.venv/bin/mlops tune models/face_vgg16 --goal 0.90 "${weights[@]}" "$@"
status=$?
set -e
echo
echo "Watch the runs: .venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db  (then open http://127.0.0.1:5000)"
exit $status
