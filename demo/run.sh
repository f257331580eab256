#!/usr/bin/env bash
# The main job: install what is missing, build, and run the demo (all backends,
# or those named: demo/run.sh rbd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/install-deps.sh >&2
exec node dist/demo/demo.js "$@"
