#!/usr/bin/env bash
# The one test command: installs what is missing, builds, then runs unit,
# integration and csi-sanity tests with node's test runner. Suites run one at
# a time because each boots its own Ceph lab on the standard ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/install-deps.sh
exec node --test --test-concurrency=1 dist/test/unit/ dist/test/integration/ dist/test/sanity/ "$@"
