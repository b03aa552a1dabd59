#!/usr/bin/env bash
# One command from a fresh clone to a running demo: install, build the first
# model if there is none, then stream the sample through a real worker.
#   FINSENTRY_DEMO_RECIPE=quick  train the 2-minute smoke model instead of the default recipe
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MODEL_DIR=${FINSENTRY_MODEL_DIR:-artifacts/model}
if [[ ! -f "$MODEL_DIR/manifest.json" ]]; then
  recipe=()
  [[ ${FINSENTRY_DEMO_RECIPE:-default} == quick ]] && recipe=(--quick)
  echo "[demo] no model in $MODEL_DIR: training (${FINSENTRY_DEMO_RECIPE:-default} recipe) and exporting it"
  .venv/bin/finsentry train --out artifacts/checkpoint "${recipe[@]}"
  .venv/bin/finsentry export artifacts/checkpoint --out "$MODEL_DIR"
fi
exec .venv/bin/finsentry demo --model-dir "$MODEL_DIR" "$@"
