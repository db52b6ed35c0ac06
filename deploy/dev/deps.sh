#!/usr/bin/env bash
# Installs what Tidemark's tests, demo and lint need, and does nothing when all
# is present. Debian packages through apt; MinIO and the Go tools built from
# their modules, at pinned versions, into .bin/ (gitignored).
#
#   deploy/dev/deps.sh          packages + MinIO + tools
#   deploy/dev/deps.sh tools    only the Go tools (buf, protoc plugins, golangci-lint)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/.bin"
mkdir -p "$BIN"

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BUF_VERSION=v1.75.0
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
GOLANGCI_LINT_VERSION=v2.15.0
# protoc-gen-go is pinned to the google.golang.org/protobuf version in go.mod,
# so generated code always matches the runtime it is compiled against.
PROTOC_GEN_GO_VERSION="$(cd "$ROOT" && go list -m -f '{{.Version}}' google.golang.org/protobuf)"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

packages() {
	# curl: deploy/local/fleet.sh creates its MinIO bucket with it.
	# gcc and libc6-dev: cgo builds libzstd (github.com/DataDog/zstd) into
	# the archive's codec; without them the build falls back to pure Go.
	# systemd: deploy's tests run systemd-analyze verify and security on the
	# units (only the tool is used; nothing is started under systemd).
	local want=(mariadb-server mariadb-client mariadb-backup btrfs-progs mydumper sysbench zstd gcc libc6-dev curl systemd)
	local missing=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "deps: installing Debian packages: ${missing[*]}" >&2
		$SUDO apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		# The package starts a system server; tests start their own instances.
		$SUDO service mariadb stop >/dev/null 2>&1 || true
	fi
}

# gobin NAME MODULE@VERSION: builds MODULE into .bin/NAME unless .bin/NAME.version
# already records that exact version.
gobin() {
	local name="$1" mod="$2"
	if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/$name.version" 2>/dev/null)" = "$mod" ]; then
		return
	fi
	echo "deps: building $mod into .bin/$name" >&2
	(cd "$ROOT" && GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "$mod")
	echo "$mod" >"$BIN/$name.version"
}

tools() {
	gobin buf "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
	gobin protoc-gen-go "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
	gobin protoc-gen-go-grpc "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
	gobin golangci-lint "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
}

case "${1:-all}" in
all)
	packages
	gobin minio "github.com/minio/minio@$MINIO_VERSION"
	tools
	;;
packages) packages ;;
minio) gobin minio "github.com/minio/minio@$MINIO_VERSION" ;;
tools) tools ;;
*)
	echo "usage: $0 [all|packages|minio|tools]" >&2
	exit 2
	;;
esac
