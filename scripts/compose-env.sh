#!/usr/bin/env bash
# Write .env for docker compose with fresh random secrets (never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .env ]]; then echo ".env exists; leaving it alone"; exit 0; fi
rand() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
umask 077
cat > .env <<EOT
FINSENTRY_INFLUX_TOKEN=$(rand)
FINSENTRY_INFLUX_ADMIN_PASSWORD=$(rand)
FINSENTRY_GRAFANA_ADMIN_PASSWORD=$(rand)
EOT
echo "wrote .env (mode 600)"
