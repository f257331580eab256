#!/usr/bin/env bash
# The one test command: installs what is missing, builds, then runs unit, integration,
# csi-sanity, hostile-input (fuzz), crash, load and deploy tests with node's test runner, and
# last the Kubernetes tests (test/k8s: Strata's image and chart on a single-node Kubernetes).
# Suites run one at a time because each boots its own Ceph lab on the standard ports (of
# 127.0.0.1, or of STRATA_LAB_ADDR). Arguments go to the first runner (the Ceph suites).
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_LOG=/tmp/strata-k8s-prepare.log
# Nothing started in the background outlives the command.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# Kubernetes and the CSI sidecars need only Go: their builds (~30 min of two cores on a fresh
# machine, nothing when cached) start first, at nice 19 and one package at a time each, and
# test/k8s/prepare.sh below waits for them (build.sh locks each target).
: > "$K8S_LOG"
for target in k8s sidecars; do
  STRATA_K8S_GO_P=1 timeout --kill-after=30 3600 bash test/k8s/build.sh "$target" >> "$K8S_LOG" 2>&1 &
done
bash test/install-deps.sh
# Helm builds from source in the background while the Ceph suites run; the deploy tests
# (test/validate-deploy, last in the runner's sorted order) wait for it.
export STRATA_HELM_STATUS=/tmp/strata-install-helm.status
bash test/install-helm.sh > /tmp/strata-install-helm.log 2>&1 &
# The rest of the Kubernetes lab (Debian packages, stand-ins, Strata's image) in the background
# too, after install-deps (one apt at a time); it ends when the Go builds above are done.
export STRATA_K8S_STATUS=/tmp/strata-k8s-prepare.status
bash test/k8s/prepare.sh >> "$K8S_LOG" 2>&1 &
k8s_prepare=$!

status=0
node --test --test-concurrency=1 dist/test/unit/ dist/test/integration/ dist/test/sanity/ dist/test/hostile/ dist/test/crash/ dist/test/validate-deploy/ "$@" || status=$?

echo "run-all: waiting for the Kubernetes lab's build (log: $K8S_LOG)"
if ! wait "$k8s_prepare"; then
  echo "run-all: the Kubernetes lab could not be built: $(cat "$STRATA_K8S_STATUS" 2>/dev/null). Last lines of $K8S_LOG:" >&2
  tail -n 40 "$K8S_LOG" >&2
  exit 1
fi
# Their Ceph lab binds the node's own address (pods cannot reach a loopback one).
node --test --test-concurrency=1 dist/test/k8s/ || status=$?
exit "$status"
