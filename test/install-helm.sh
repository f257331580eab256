#!/usr/bin/env bash
# Installs what the deploy tests need and a fresh machine lacks: Helm, built from the Go module
# proxy (get.helm.sh is out of reach here), and the external-snapshotter client module, whose
# CRDs validate the VolumeSnapshot kinds. Building Helm takes ~5 minutes on 2 cores, so
# test/run-all.sh runs this in the background while the Ceph suites run; the status file tells
# test/validate-deploy/deploy.test.ts when it is done.
set -uo pipefail
HELM_VERSION=v3.16.3
SNAPSHOTTER_CLIENT=github.com/kubernetes-csi/external-snapshotter/client/v8@v8.4.0
STATUS=${STRATA_HELM_STATUS:-/tmp/strata-install-helm.status}
echo running > "$STATUS"
fail() { echo "failed: $*" > "$STATUS"; echo "install-helm: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || fail "Go is needed to build Helm"
GOBIN_DIR="$(go env GOPATH)/bin"
if ! go version -m "$GOBIN_DIR/helm" 2>/dev/null | grep -q "helm.sh/helm/v3[[:space:]]*$HELM_VERSION"; then
  echo "install-helm: go install helm@$HELM_VERSION"
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || fail "go install helm failed"
fi
go mod download "$SNAPSHOTTER_CLIENT" || fail "go mod download $SNAPSHOTTER_CLIENT failed"
echo ok > "$STATUS"
