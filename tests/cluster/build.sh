#!/usr/bin/env bash
# Builds the real control plane the cluster tests run, from Go modules, into a cache folder outside the
# repository keyed by the versions: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# (k8s.io/kubernetes) and kwok, plus kwok's stage configs (from its module), and Metacontroller from its
# source beside the checkout (../shared/third_party/metacontroller-v4.17.2: the module proxy refuses the
# module itself, not its dependencies) into a cache folder of its own, keyed by that source's go.sum and
# linked as bin/metacontroller. Without that source there is no bin/metacontroller, and the tests that
# run the operator skip saying so. A warm run only checks that the files are there.
# Prints the cache folder (bin/ and stages/ inside) on stdout; everything else goes to stderr.
# Exit 3: Go is not installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
KWOK_VERSION=v0.8.0
cache="${KAITO_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito-sglang/cluster}"
# go.sum pins every dependency: a changed go.sum is a new key even at the same headline versions.
sums=$(cat "$here/go/kubernetes/go.sum" "$here/go/kwok/go.sum" | sha256sum | cut -c1-12)
dir="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-$sums"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
stages=(node/fast pod/fast)
MC_VERSION=v4.17.2
mc_src="${KAITO_METACONTROLLER_SOURCE:-$here/../../../shared/third_party/metacontroller-$MC_VERSION}"
mc_bin=""
if [ -f "$mc_src/go.sum" ]; then
	mc_src="$(cd "$mc_src" && pwd)"
	mc_bin="$cache/metacontroller-$MC_VERSION-$(sha256sum <"$mc_src/go.sum" | cut -c1-12)/metacontroller"
fi

complete() {
	for b in "${want[@]}"; do [ -x "$dir/bin/$b" ] || return 1; done
	[ -f "$dir/stages/done" ]
}
# Metacontroller: built with -o into its own cache folder (the source folder is read-only input; go
# does not rewrite its go.mod/go.sum with these flags), then linked into bin/ of the control plane.
metacontroller() {
	if [ -z "$mc_bin" ]; then
		rm -f "$dir/bin/metacontroller"
		echo "note: $mc_src is absent: no Metacontroller, the operator tests will skip" >&2
		return 0
	fi
	if [ ! -x "$mc_bin" ]; then
		command -v go >/dev/null || { echo "go not found: cannot build Metacontroller" >&2; exit 3; }
		echo "building Metacontroller $MC_VERSION from $mc_src..." >&2
		local t0; t0=$(date +%s)
		mkdir -p "$(dirname "$mc_bin")"
		(cd "$mc_src" && CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local \
			go build -trimpath -ldflags "-s -w" -o "$mc_bin.partial" ./pkg/cmd/metacontroller) >&2
		mv "$mc_bin.partial" "$mc_bin"
		echo "built Metacontroller in $(($(date +%s) - t0)) s" >&2
	fi
	[ "$(readlink "$dir/bin/metacontroller" 2>/dev/null)" = "$mc_bin" ] || ln -sfn "$mc_bin" "$dir/bin/metacontroller"
}
if complete; then metacontroller; echo "$dir"; exit 0; fi
command -v go >/dev/null || { echo "go not found: cannot build the test control plane" >&2; exit 3; }

mkdir -p "$dir"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
start=$(date +%s)
build() { # build MODULE-DIR OUT-DIR LDFLAGS PACKAGES...
	local mod=$1 out=$2 ldflags=$3; shift 3
	(cd "$mod" && go build -trimpath -tags notest,grpcnotrace -ldflags "-s -w $ldflags" -o "$out/" "$@") >&2
}
tmp="$dir/bin.partial"; rm -rf "$tmp"; mkdir -p "$tmp"
k8sv="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
k8sv="$k8sv -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35"
echo "building etcd $ETCD_VERSION and Kubernetes $K8S_VERSION (cold: tens of minutes on 2 cores)..." >&2
build "$here/go/kubernetes" "$tmp" "$k8sv" ./etcd k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
echo "building kwok $KWOK_VERSION..." >&2
build "$here/go/kwok" "$tmp" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok

# kwok's stage configs (node lifecycle, pod lifecycle) live in its module, not in the binary.
kwok_src=$(cd "$here/go/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
rm -rf "$dir/stages"; mkdir -p "$dir/stages"
for s in "${stages[@]}"; do
	for f in "$kwok_src/kustomize/stage/$s"/*.yaml; do
		[ "$(basename "$f")" = kustomization.yaml ] || cp "$f" "$dir/stages/"
	done
done
chmod -R u+w "$dir/stages"
touch "$dir/stages/done"
rm -rf "$dir/bin"; mv "$tmp" "$dir/bin"
metacontroller
echo "built in $(($(date +%s) - start)) s into $dir" >&2
echo "$dir"
