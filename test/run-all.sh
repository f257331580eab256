#!/usr/bin/env bash
# The one test command: installs what is missing, builds, then runs unit,
# integration, csi-sanity, hostile-input (fuzz), crash, load and deploy tests
# with node's test runner. Suites run one at a time because each boots its own
# Ceph lab on the standard ports (of 127.0.0.1, or of STRATA_LAB_ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/install-deps.sh
# Helm builds from source in the background while the Ceph suites run; the deploy tests
# (test/validate-deploy, last in the runner's sorted order) wait for it.
export STRATA_HELM_STATUS=/tmp/strata-install-helm.status
bash test/install-helm.sh > /tmp/strata-install-helm.log 2>&1 &
exec node --test --test-concurrency=1 dist/test/unit/ dist/test/integration/ dist/test/sanity/ dist/test/hostile/ dist/test/crash/ dist/test/validate-deploy/ "$@"
