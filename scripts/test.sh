#!/usr/bin/env bash
# The whole test suite. Installs what is missing, then runs pytest; the tests
# start the real broker, InfluxDB and VictoriaMetrics themselves on free
# loopback ports and stop them afterwards. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
