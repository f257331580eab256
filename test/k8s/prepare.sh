#!/usr/bin/env bash
# Everything the Kubernetes tests (dist/test/k8s) need, built before they start: the Debian
# packages, the stand-ins, Kubernetes and the CSI sidecars (test/k8s/build.sh, cached in
# /var/cache/strata-k8s), and Strata's image (test/k8s/strata-image.sh). test/run-all.sh runs it
# in the background while the Ceph suites run and waits for it before the Kubernetes tests. It
# starts the Go builds even earlier, before install-deps: build.sh then waits on its lock here.
#
# On a fresh machine the Go builds take about 30 min of two busy cores (../shared/k8s-lab/FACTS.md):
# Kubernetes and the sidecars build side by side, one package at a time each (`go build -p 1`),
# so at most two compilers run, both at nice 19: the Ceph suites keep the cores they want. With
# everything cached this takes seconds. The whole of it is bounded by STRATA_K8S_BUILD_TIMEOUT
# (default 60 min). The status file says running, ok, or "failed: <step>"; the log says why.
set -uo pipefail
cd "$(dirname "$0")/../.."
STATUS=${STRATA_K8S_STATUS:-/tmp/strata-k8s-prepare.status}
LIMIT=${STRATA_K8S_BUILD_TIMEOUT:-3600}
export STRATA_K8S_GO_P=${STRATA_K8S_GO_P:-1}
echo running > "$STATUS"
start=$(date +%s)
fail() { echo "failed: $*" > "$STATUS"; echo "k8s-prepare: FAILED: $* (after $(($(date +%s) - start)) s)" >&2; exit 1; }
step() { # name cmd...: bounded by what is left of LIMIT
  local name=$1 left; shift
  left=$((LIMIT - ($(date +%s) - start)))
  [ "$left" -gt 0 ] || fail "$name: no time left of ${LIMIT} s"
  timeout --kill-after=30 "$left" "$@" || fail "$name (exit $?; 124 is the ${LIMIT} s bound)"
}

step "apt packages and stand-ins" bash test/k8s/build.sh apt standins
# The image first: it takes a minute or two, and the Go builds need no apt lock.
step "Strata image" bash test/k8s/strata-image.sh
step "Kubernetes and sidecars" bash -c '
  bash test/k8s/build.sh k8s & k=$!
  bash test/k8s/build.sh sidecars & s=$!
  wait $k; rk=$?; wait $s; rs=$?
  [ $rk -eq 0 ] || echo "k8s-prepare: the Kubernetes build failed (exit $rk)" >&2
  [ $rs -eq 0 ] || echo "k8s-prepare: the sidecar build failed (exit $rs)" >&2
  [ $rk -eq 0 ] && [ $rs -eq 0 ]'
echo "k8s-prepare: ready in $(($(date +%s) - start)) s" >&2
echo ok > "$STATUS"
