#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager) from the Go module proxy at the
# versions pinned in ci/kube/go.mod, into a cache outside the clone, and reuses it when present.
# Prints the directory holding the binaries on its last line.
# A cold build takes ~10-15 minutes on 2 cores; a warm one nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kube_version="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")"
cache="${AMA_MIGRATOR_KUBE_CACHE:-$HOME/.cache/ama-migrator}/kube-${kube_version}-etcd-${etcd_version}"
if [[ -x "$cache/kube-apiserver" && -x "$cache/kube-controller-manager" && -x "$cache/etcd" ]]; then
  echo "test control plane: reusing $cache" >&2
  echo "$cache"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "go is required to build the test control plane (go version >= 1.25)" >&2; exit 1; }
mkdir -p "$cache.partial"
cd "$here"
export CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"
for pkg in go.etcd.io/etcd/server/v3:etcd k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver \
           k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager; do
  path="${pkg%%:*}"; name="${pkg##*:}"
  echo "test control plane: building $name ($path)" >&2
  start=$SECONDS
  go build -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=${kube_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$kube_version" | cut -d. -f2)" \
    -o "$cache.partial/$name" "$path"
  echo "test control plane: $name built in $((SECONDS - start)) s" >&2
done
rm -rf "$cache"
mv "$cache.partial" "$cache"
echo "$cache"
