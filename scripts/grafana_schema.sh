#!/usr/bin/env bash
# Regenerate the JSON Schema for Grafana dashboard JSON from Grafana's published
# TypeScript types (@grafana/schema on npm).
#
# Usage: scripts/grafana_schema.sh [GRAFANA_VERSION] [--strict]
#   GRAFANA_VERSION  @grafana/schema version to use (default: 11.6.0)
#   --strict         keep ts-json-schema-generator's default
#                    "additionalProperties": false on every object. Catches
#                    misspelled keys, but also rejects keys Grafana itself writes
#                    (e.g. templating variables' "definition", "__requires" in
#                    exports), so it is written to dashboard-<ver>.strict.schema.json.
#
# Output: dashboards/schema/dashboard-<ver>.schema.json (or .strict.schema.json)
# Needs node + npm and access to the npm registry. Nothing is installed globally:
# the packages go into a temporary directory that is removed on exit.
set -euo pipefail

GRAFANA_VERSION="11.6.0"
STRICT=0
for arg in "$@"; do
  case "$arg" in
    --strict) STRICT=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "grafana_schema.sh: unknown option: $arg" >&2; exit 2 ;;
    *) GRAFANA_VERSION="$arg" ;;
  esac
done

# Pinned tool versions (override via environment if needed).
TSJSG_VERSION="${TSJSG_VERSION:-2.4.0}"          # ts-json-schema-generator
TYPESCRIPT_VERSION="${TYPESCRIPT_VERSION:-5.9.3}" # its ^5 peer; TS 7 ("latest") has no JS compiler API
TYPE_NAME="Dashboard"
TYPES_REL="dist/esm/raw/dashboard/x/dashboard_types.gen.d.ts"
# "export" gives named definitions (Panel, RowPanel, GridPos, DataSourceRef, ...);
# "none" inlines everything (about twice the size, same validation result).
EXPOSE="${EXPOSE:-export}"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "grafana_schema.sh: '$tool' not found in PATH; install Node.js and npm first" \
         "(e.g. 'apt-get install -y nodejs npm')." >&2
    exit 1
  fi
done

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$REPO_ROOT/dashboards/schema"
if [[ "$STRICT" == 1 ]]; then
  OUT_FILE="$OUT_DIR/dashboard-${GRAFANA_VERSION}.strict.schema.json"
  AP_FLAG=()
else
  OUT_FILE="$OUT_DIR/dashboard-${GRAFANA_VERSION}.schema.json"
  AP_FLAG=(--additional-properties)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/grafana-schema.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "Installing @grafana/schema@$GRAFANA_VERSION ts-json-schema-generator@$TSJSG_VERSION typescript@$TYPESCRIPT_VERSION in $WORK" >&2
(
  cd "$WORK"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error \
    "@grafana/schema@$GRAFANA_VERSION" \
    "ts-json-schema-generator@$TSJSG_VERSION" \
    "typescript@$TYPESCRIPT_VERSION" >&2
)

TYPES_FILE="$WORK/node_modules/@grafana/schema/$TYPES_REL"
if [[ ! -f "$TYPES_FILE" ]]; then
  echo "grafana_schema.sh: $TYPES_REL not found in @grafana/schema@$GRAFANA_VERSION;" \
       "the package layout differs for this version." >&2
  exit 1
fi

CMD=(ts-json-schema-generator --path "node_modules/@grafana/schema/$TYPES_REL"
     --type "$TYPE_NAME" --expose "$EXPOSE" "${AP_FLAG[@]}")
echo "Running: ${CMD[*]}" >&2
(cd "$WORK" && "./node_modules/.bin/${CMD[0]}" "${CMD[@]:1}" --out "$WORK/raw.schema.json")

COMMENT="Generated from @grafana/schema@$GRAFANA_VERSION ($TYPES_REL, type '$TYPE_NAME')"
COMMENT+=" by ts-json-schema-generator@$TSJSG_VERSION (typescript@$TYPESCRIPT_VERSION) via scripts/grafana_schema.sh:"
COMMENT+=" ${CMD[*]}. Do not edit by hand; rerun the script."

mkdir -p "$OUT_DIR"
COMMENT="$COMMENT" node -e '
  const fs = require("fs");
  const [src, dst] = process.argv.slice(1);
  const schema = JSON.parse(fs.readFileSync(src, "utf8"));
  const out = { $comment: process.env.COMMENT, ...schema };
  fs.writeFileSync(dst, JSON.stringify(out, null, 2) + "\n");
' "$WORK/raw.schema.json" "$OUT_FILE"

echo "Wrote ${OUT_FILE#"$REPO_ROOT"/} ($(wc -c <"$OUT_FILE") bytes)" >&2
