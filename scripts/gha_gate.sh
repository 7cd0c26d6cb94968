#!/usr/bin/env bash
# CI gate used by the GitHub Action (action.yml at the repository root): wait for the greenest
# start of the next step, then write what was chosen to the step's outputs.
#
# Inputs arrive as environment variables (never interpolated into this script, so an input cannot
# inject shell): GATE_LOCATIONS (comma/newline separated, e.g. "aws:us-east-1, zone:DE"),
# GATE_DURATION (e.g. 30, 2h), GATE_MAX_DELAY (e.g. 6h), and optionally GATE_SERVER,
# CARBON_OPTIMIZER_CLIENT_API_KEY, GATE_MODE (default carbon), GATE_FAIL_CLOSED=true,
# GATE_DRY_RUN=true, GATE_EXTRA_ARGS (more `carbon-optimizer wait` options, word-split).
# Outputs (appended to $GITHUB_OUTPUT): start, location, saving (percent vs starting now),
# saving-g (gCO2e), carbon-source, fail-open. Exit status: that of `carbon-optimizer wait`
# (0, or 2 bad input, 69 fail-closed, 130/143 cancelled; see docs/run.md).
set -euo pipefail

CARBON_OPTIMIZER=${CARBON_OPTIMIZER:-carbon-optimizer}
: "${GATE_LOCATIONS:?set the 'locations' input, e.g. aws:us-east-1, zone:DE}"
: "${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set (not running in GitHub Actions?)}"

args=(wait --json --duration "${GATE_DURATION:-60}" --max-delay "${GATE_MAX_DELAY:-6h}" --mode "${GATE_MODE:-carbon}")
while IFS= read -r location; do
    location=$(printf '%s' "$location" | tr -d '[:space:]')
    [ -n "$location" ] && args+=(--location "$location")
done < <(printf '%s\n' "$GATE_LOCATIONS" | tr ',' '\n')
[ -n "${GATE_SERVER:-}" ] && args+=(--server "$GATE_SERVER")
[ "${GATE_FAIL_CLOSED:-false}" = "true" ] && args+=(--fail-closed)
[ "${GATE_DRY_RUN:-false}" = "true" ] && args+=(--dry-run)
if [ -n "${GATE_EXTRA_ARGS:-}" ]; then
    read -r -a extra <<<"$GATE_EXTRA_ARGS"
    args+=("${extra[@]}")
fi

decision=$(mktemp)
trap 'rm -f "$decision"' EXIT
status=0
# shellcheck disable=SC2086 # CARBON_OPTIMIZER may be "python -m carbon_optimizer"
$CARBON_OPTIMIZER "${args[@]}" >"$decision" || status=$?
if [ -s "$decision" ]; then
    python3 - "$decision" >>"$GITHUB_OUTPUT" <<'PY'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as handle:
    d = json.loads([line for line in handle if line.strip()][-1])  # the last decision: a re-plan wins
pct = d.get("saving_pct")
grams = d.get("saving_g")
print(f"start={d['start']}")
print(f"location={d['location']}")
print(f"saving={'' if pct is None else round(pct, 1)}")
print(f"saving-g={'' if grams is None else round(grams, 1)}")
print(f"carbon-source={d.get('carbon_source') or ''}")
print(f"fail-open={'true' if d.get('fail_open') else 'false'}")
PY
fi
exit "$status"
