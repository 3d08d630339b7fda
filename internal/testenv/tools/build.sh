#!/bin/sh
# Builds etcd and kube-apiserver from the Go modules next to this script into DIR (make kube-tools).
# DIR/stamp records a hash of the modules' go.mod, go.sum and main.go plus the Go version: when it
# matches, nothing is built, so a second run is instant. Binaries are written under a temporary name
# and renamed, so an interrupted build never leaves a half-written one behind.
set -eu
dir=$1
go=${GO:-go}
tools=$(cd "$(dirname "$0")" && pwd)

want="$(cd "$tools" && cat etcd/go.mod etcd/go.sum etcd/main.go \
	kube-apiserver/go.mod kube-apiserver/go.sum kube-apiserver/main.go | sha256sum | cut -d' ' -f1) $("$go" env GOVERSION)"
if [ -x "$dir/etcd" ] && [ -x "$dir/kube-apiserver" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$want" ]; then
	exit 0
fi
mkdir -p "$dir"
rm -f "$dir/stamp"

# The module's version of a requirement, e.g. version kube-apiserver k8s.io/kubernetes -> v1.37.2.
version() { awk -v m="$2" '{ sub(/^require[ \t]+/, "") } $1 == m && $2 ~ /^v/ { print $2 }' "$tools/$1/go.mod"; }
kube=$(version kube-apiserver k8s.io/kubernetes)
minor=$(echo "$kube" | cut -d. -f2)

build() { # name ldflags
	echo "kube-tools: building $1 into $dir (minutes when cold)"
	start=$(date +%s)
	(cd "$tools/$1" && GOFLAGS=-mod=readonly "$go" build -buildvcs=false -trimpath -ldflags "$2" -o "$dir/$1.tmp" .)
	mv "$dir/$1.tmp" "$dir/$1"
	echo "kube-tools: $1 built in $(($(date +%s) - start))s"
}
build etcd "-s -w"
# The version variables upstream's release build sets (hack/lib/version.sh), so /version tells the truth.
v=k8s.io/component-base/version
build kube-apiserver "-s -w -X $v.gitVersion=$kube -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
echo "$want" > "$dir/stamp"
