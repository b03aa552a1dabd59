#!/usr/bin/env bash
# Evaluate a model on the frozen financial test split (per style), the out-of-distribution test set
# (written and labelled apart from the corpus; never tuned on) and the tweet test split.
#   scripts/evaluate.sh [MODEL (dir or checkpoint)] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/default}
OUT=${2:-reports/$(basename "$MODEL")}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
.venv/bin/python -m models.data test "$OUT/tweets-test.jsonl"
.venv/bin/python -m models.evaluate --model "$MODEL" --data models/corpus/splits/test.jsonl --domain-col style --out "$OUT/financial-test"
.venv/bin/python -m models.evaluate --model "$MODEL" --data models/corpus/ood_test.jsonl --domain-col style --out "$OUT/ood-test"
.venv/bin/python -m models.evaluate --model "$MODEL" --data "$OUT/tweets-test.jsonl" --out "$OUT/tweets-test"
# the tweets are a public labelled dataset: keep its metrics, never a copy of its texts in the repo
rm "$OUT/tweets-test.jsonl" "$OUT/tweets-test/predictions.jsonl"
