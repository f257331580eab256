#!/usr/bin/env bash
# Builds and caches what the Kubernetes lab (test/k8s/lab.ts) runs: Kubernetes' control plane and
# kubelet, the CSI sidecars with the snapshot-controller and the VolumeSnapshot CRDs, and installs
# etcd, containerd, runc, the CNI plugins and busybox-static from Debian when missing.
# Binaries go to a cache outside the repo keyed by version, so a run with everything built is a
# no-op that takes seconds. See ../shared/k8s-lab/FACTS.md for why each part is built this way.
#
#   test/k8s/build.sh [apt|standins|k8s|sidecars|kubectl|all ...]   (default: all)
#
# Builds run at nice 19 with `go build -p 1` (override with STRATA_K8S_GO_P): the test machines
# have two cores that the Ceph suites share. Each build's time goes to $CACHE/build-times.log.
set -euo pipefail

CACHE=${STRATA_K8S_CACHE:-/var/cache/strata-k8s}
GO_P=${STRATA_K8S_GO_P:-1}
K8S_VERSION=v1.34.10            # .11 and .12 fail checksum-database verification here
# Sidecars: the chart pins csi-provisioner v6.1.1 and csi-resizer v2.2.1, which the module proxy
# does not serve here; v6.4.0 and v2.3.0 are the served releases of the same majors.
PROVISIONER_VERSION=v6.4.0
ATTACHER_VERSION=v4.12.0
RESIZER_VERSION=v2.3.0
SNAPSHOTTER_VERSION=v8.6.0

K8S_DIR=$CACHE/kubernetes-$K8S_VERSION
# kube-proxy routes the kubernetes Service's ClusterIP to the apiserver for pods (the chart's
# controller pod); kubectl only for debugging by hand (tests never parse its output).
K8S_COMPONENTS="kube-apiserver kubelet kube-scheduler kube-controller-manager kube-proxy"
TIMES=$CACHE/build-times.log
mkdir -p "$CACHE"

log() { echo "k8s-build: $*" >&2; }
timed() { # name cmd...: runs cmd and logs its wall time
  local name=$1 start end; shift
  start=$(date +%s)
  log "building $name"
  "$@"
  end=$(date +%s)
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$name" "$((end - start))" | tee -a "$TIMES" >&2
}
go_build() { # out-file pkg [ldflags]: static, stripped, reproducible
  CGO_ENABLED=0 nice -n 19 go build -p "$GO_P" -trimpath -ldflags "-s -w ${3:-}" -o "$1.tmp" "$2"
  mv "$1.tmp" "$1"
}
mod_dir() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'; }
mod_gomod() { go mod download -json "$1" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'; }

install_apt() {
  # binary -> Debian package
  declare -A pkg=([etcd]=etcd-server [containerd]=containerd [ctr]=containerd [runc]=runc
    [/usr/lib/cni/bridge]=containernetworking-plugins [/usr/lib/cni/host-local]=containernetworking-plugins
    [/usr/lib/cni/loopback]=containernetworking-plugins [/bin/busybox]=busybox-static)
  local missing=() b
  for b in "${!pkg[@]}"; do
    if [[ $b == /* ]]; then [ -x "$b" ] || missing+=("${pkg[$b]}")
    else command -v "$b" >/dev/null 2>&1 || missing+=("${pkg[$b]}"); fi
  done
  # busybox-static replaces the dynamic busybox; a static one is what the image rootfs needs.
  if [ -x /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then missing+=(busybox-static); fi
  [ ${#missing[@]} -eq 0 ] && return 0
  local list; list=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  log "apt-get install $list"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  timed "apt:$list" apt-get install -y -qq --no-install-recommends $list >/dev/null
  # Debian starts containerd as a service; the lab runs its own with its own config and state.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q containerd 2>/dev/null; then
    systemctl disable --now containerd >/dev/null 2>&1 || true
  fi
}

# k8s.io/kubernetes replaces each k8s.io/<staging> module with ./staging/..., so it cannot be built
# as a dependency as is: a wrapper module pins every staging module to its published v0.x twin.
k8s_wrapper() {
  local w=$K8S_DIR/wrapper c
  [ "$(cat "$w/.ready" 2>/dev/null)" = "$K8S_COMPONENTS kubectl" ] && return 0
  rm -rf "$w"; mkdir -p "$w"
  local upstream staging_ver gover
  upstream=$(mod_gomod "k8s.io/kubernetes@$K8S_VERSION")
  staging_ver=v0.${K8S_VERSION#v1.}
  gover=$(sed -n 's/^go \(.*\)$/\1/p' "$upstream")
  {
    echo "module strata.local/k8s-build"
    echo
    echo "go $gover"
    grep '^godebug' "$upstream" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    sed -n 's/^[[:space:]]*\(k8s\.io\/[^[:space:]]*\) => \.\/staging\/.*$/\1/p' "$upstream" |
      while read -r m; do echo "replace $m => $m $staging_ver"; done
  } > "$w/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in $K8S_COMPONENTS kubectl; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } > "$w/tools.go"
  (cd "$w" && go mod tidy -e >/dev/null 2>"$w/tidy.log" || { cat "$w/tidy.log" >&2; exit 1; })
  echo "$K8S_COMPONENTS kubectl" > "$w/.ready"
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local d="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  d+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  d+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  d+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  echo "$d"
}

build_k8s() { # components...
  local c
  mkdir -p "$K8S_DIR/bin"
  for c in "$@"; do
    [ -x "$K8S_DIR/bin/$c" ] && continue
    k8s_wrapper
    (cd "$K8S_DIR/wrapper" && timed "$c-$K8S_VERSION" go_build "$K8S_DIR/bin/$c" "k8s.io/kubernetes/cmd/$c" "$(k8s_ldflags)")
  done
}

# The sidecars' go.mod files carry replace directives too: build them inside a writable copy.
sidecar_src() { # module@version dest
  local dest=$2
  [ -f "$dest/.ready" ] && return 0
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  cp -r "$(mod_dir "$1")" "$dest"
  chmod -R u+w "$dest"
  touch "$dest/.ready"
}

build_sidecar() { # name module version cmd...
  local name=$1 module=$2 version=$3; shift 3
  local dir=$CACHE/$name-$version cmd todo=0
  for cmd in "$@"; do [ -x "$dir/bin/$cmd" ] || todo=1; done
  [ $todo -eq 0 ] && return 0
  sidecar_src "$module@$version" "$dir/src"
  mkdir -p "$dir/bin"
  for cmd in "$@"; do
    [ -x "$dir/bin/$cmd" ] && continue
    (cd "$dir/src" && GOFLAGS="$GOFLAGS -mod=mod" timed "$cmd-$version" go_build "$dir/bin/$cmd" "./cmd/$cmd" "-X main.version=$version")
  done
}

build_sidecars() {
  local snap=$CACHE/external-snapshotter-$SNAPSHOTTER_VERSION
  sidecar_src "github.com/kubernetes-csi/external-snapshotter/v8@$SNAPSHOTTER_VERSION" "$snap/src"
  # The snapshotter replaces client/v8 with ./client, which its module zip leaves out. Its go.mod
  # requires an older client (v8.4.0 for v8.6.0) that lacks the volumegroupsnapshot/v1 packages:
  # ./client is the tree of the same release, published as client/v8 at the same version.
  if ! [ -f "$snap/src/client/go.mod" ]; then
    rm -rf "$snap/src/client"
    cp -r "$(mod_dir "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION")" "$snap/src/client"
    chmod -R u+w "$snap/src/client"
  fi
  if ! [ -f "$snap/crd/.ready" ]; then
    mkdir -p "$snap/crd"
    cp "$snap/src/client/config/crd/"snapshot.storage.k8s.io_*.yaml "$snap/crd/"
    touch "$snap/crd/.ready"
  fi
  build_sidecar external-snapshotter github.com/kubernetes-csi/external-snapshotter/v8 "$SNAPSHOTTER_VERSION" csi-snapshotter snapshot-controller
  build_sidecar external-attacher github.com/kubernetes-csi/external-attacher/v4 "$ATTACHER_VERSION" csi-attacher
  build_sidecar external-resizer github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION" csi-resizer
  build_sidecar external-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" csi-provisioner
}

# The stand-ins for node-driver-registrar and livenessprobe, and the pause binary (test/k8s/standins), keyed by a hash
# of their sources so that an edit rebuilds them.
STANDINS_SRC=$(cd "$(dirname "$0")/standins" && pwd)
STANDINS_DIR=$CACHE/standins-$(cd "$STANDINS_SRC" && find . -type f \( -name '*.go' -o -name 'go.*' \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
build_standins() {
  local cmd
  mkdir -p "$STANDINS_DIR/bin"
  for cmd in node-driver-registrar livenessprobe pause; do
    [ -x "$STANDINS_DIR/bin/$cmd" ] && continue
    (cd "$STANDINS_SRC" && timed "standin-$cmd" go_build "$STANDINS_DIR/bin/$cmd" "./$cmd")
  done
}

# A manifest of where everything is, read by lab.ts.
write_paths() { # through a file of its own: two builds (k8s, sidecars) may run side by side
  cat > "$CACHE/paths.env.$$" <<EOF
K8S_VERSION=$K8S_VERSION
K8S_BIN=$K8S_DIR/bin
PROVISIONER_VERSION=$PROVISIONER_VERSION
ATTACHER_VERSION=$ATTACHER_VERSION
RESIZER_VERSION=$RESIZER_VERSION
SNAPSHOTTER_VERSION=$SNAPSHOTTER_VERSION
CSI_PROVISIONER=$CACHE/external-provisioner-$PROVISIONER_VERSION/bin/csi-provisioner
CSI_ATTACHER=$CACHE/external-attacher-$ATTACHER_VERSION/bin/csi-attacher
CSI_RESIZER=$CACHE/external-resizer-$RESIZER_VERSION/bin/csi-resizer
CSI_SNAPSHOTTER=$CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/bin/csi-snapshotter
SNAPSHOT_CONTROLLER=$CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/bin/snapshot-controller
SNAPSHOT_CRDS=$CACHE/external-snapshotter-$SNAPSHOTTER_VERSION/crd
NODE_DRIVER_REGISTRAR=$STANDINS_DIR/bin/node-driver-registrar
LIVENESSPROBE=$STANDINS_DIR/bin/livenessprobe
PAUSE=$STANDINS_DIR/bin/pause
EOF
  mv "$CACHE/paths.env.$$" "$CACHE/paths.env"
}

# One lock per target: two runs never build the same thing at once, but the stand-ins can be
# built while Kubernetes builds.
locked() { # target cmd...
  local t=$1; shift
  ( flock 9; "$@" ) 9>"$CACHE/.lock-$t"
}

main() {
  command -v go >/dev/null 2>&1 || { log "Go is needed"; exit 1; }
  GOFLAGS=$(go env GOFLAGS)
  export GOFLAGS
  local targets=("$@") t
  [ ${#targets[@]} -eq 0 ] && targets=(all)
  [ "${targets[*]}" = all ] && targets=(apt standins k8s sidecars)
  write_paths
  for t in "${targets[@]}"; do
    case $t in
      apt) locked apt install_apt ;;
      k8s) locked k8s build_k8s $K8S_COMPONENTS ;;
      kubectl) locked k8s build_k8s kubectl ;;
      sidecars) locked sidecars build_sidecars ;;
      standins) locked standins build_standins ;;
      *) log "unknown target $t"; exit 2 ;;
    esac
  done
  log "done"
}
# Bash reads a script as it runs: with everything in main, editing this file during a 30-minute
# build cannot change what the running build does.
main "$@"; exit $?
