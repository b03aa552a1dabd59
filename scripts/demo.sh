#!/usr/bin/env bash
# One command from a fresh clone to a running demo: install what serving needs (no PyTorch, no
# training: the default model ships in models/default), then stream the sample through a local
# broker and a real worker, with live per-ticker sentiment in the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
scripts/install.sh --demo
echo "[demo] installed in $((SECONDS - started)) s"
exec .venv/bin/finsentry demo --model-dir "${FINSENTRY_MODEL_DIR:-models/default}" "$@"
