#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian machine, as root, and
# only what is missing: Ceph and FUSE tools from Debian's packages, csi-sanity
# from the Go module proxy, the npm dependencies, and a build.
set -euo pipefail
cd "$(dirname "$0")/.."

CSI_SANITY_VERSION=v5.6.0   # latest csi-test v5 release
# binary -> Debian package
declare -A PKG=(
  [ceph-mon]=ceph-mon [ceph-mgr]=ceph-mgr [ceph-osd]=ceph-osd [ceph-mds]=ceph-mds [radosgw]=radosgw
  [ceph]=ceph-common [rbd]=ceph-common [rbd-fuse]=rbd-fuse [ceph-fuse]=ceph-fuse [rbd-nbd]=rbd-nbd
  [s3fs]=s3fs [rclone]=rclone [setpriv]=util-linux [mkfs.xfs]=xfsprogs [mkfs.ext4]=e2fsprogs [fusermount3]=fuse3 [losetup]=mount [blkid]=util-linux [g++]=g++
)
missing=()
for bin in "${!PKG[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || [ -x "/sbin/$bin" ] || missing+=("${PKG[$bin]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "install-deps: installing Debian packages: $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

# The FUSE abort switch (used to clean up after a failed test) lives in fusectl.
if ! grep -q " fusectl " /proc/self/mountinfo; then mount -t fusectl none /sys/fs/fuse/connections 2>/dev/null || true; fi

GOBIN_DIR="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if ! [ -x "$GOBIN_DIR/csi-sanity" ] || ! go version -m "$GOBIN_DIR/csi-sanity" 2>/dev/null | grep -q "csi-test/v5[[:space:]]*$CSI_SANITY_VERSION"; then
  if ! command -v go >/dev/null 2>&1; then
    echo "install-deps: Go (1.22 or newer) is needed to install csi-sanity; install it and run again" >&2
    exit 1
  fi
  echo "install-deps: go install csi-sanity@$CSI_SANITY_VERSION"
  go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
fi

if ! [ -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
# A clean build: compiled files of removed sources must not run as tests. The node's mount
# addon (native/) is built with g++ when its source changed.
rm -rf dist
npm run --silent build
