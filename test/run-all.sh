#!/usr/bin/env bash
# The one test command: installs what is missing, builds, then runs unit, integration,
# csi-sanity, hostile-input (fuzz), crash, load and deploy tests with node's test runner, and
# last the Kubernetes tests (test/k8s: Strata's image and chart on a single-node Kubernetes).
# Suites run one at a time because each boots its own Ceph lab on the standard ports (of
# 127.0.0.1, or of STRATA_LAB_ADDR). Arguments go to the first runner (the Ceph suites).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/install-deps.sh
# Helm builds from source in the background while the Ceph suites run; the deploy tests
# (test/validate-deploy, last in the runner's sorted order) wait for it.
export STRATA_HELM_STATUS=/tmp/strata-install-helm.status
bash test/install-helm.sh > /tmp/strata-install-helm.log 2>&1 &
# Kubernetes, the CSI sidecars and Strata's image build in the background too (nice 19, at most
# two compilers; ~30 min of two cores on a fresh machine, seconds when cached).
K8S_LOG=/tmp/strata-k8s-prepare.log
export STRATA_K8S_STATUS=/tmp/strata-k8s-prepare.status
bash test/k8s/prepare.sh > "$K8S_LOG" 2>&1 &
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
