#!/usr/bin/env bash
# Builds SPIRE's spire-agent and spire-server at one pinned release into
# .bin/spire-<version>/, to measure wid against SPIRE in the same run, to
# use spire-agent's "api fetch" as a Workload API peer in e2e tests, and to
# federate a SPIRE trust domain with wid in e2e tests.
#
#   scripts/spire/build.sh               # both binaries (what e2e needs)
#   scripts/spire/build.sh spire-agent   # only the agent
#
# Idempotent: a binary that is already there and reports the version is kept.
# SPIRE's source comes from the Go module proxy, into the module cache; it is
# built from a writable copy outside our module (its go.mod is SPIRE's, ours is
# never touched) and none of it is committed (.bin/ is ignored).
#
# Cost on 2 cores (measured): spire-agent alone 2.5-3.5 min cold, both 7.5
# min (12 with the machine busy); 4-11 s with a warm Go build cache.
# spire-server needs cgo (gcc) for its sqlite3 datastore.
#
# Settings: SPIRE_VERSION (default 1.13.3), SPIRE_BIN_DIR (default
# <repo>/.bin/spire-$SPIRE_VERSION).
set -euo pipefail

version=${SPIRE_VERSION:-1.13.3}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${SPIRE_BIN_DIR:-$root/.bin/spire-$version}
go=${GO:-go}

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	bins=(spire-agent spire-server)
fi

# have BIN: BIN exists in $out and says it is $version. SPIRE prints its
# version on stderr.
have() {
	[ -x "$out/$1" ] && [ "$("$out/$1" -version 2>&1)" = "$version" ]
}

want=()
for b in "${bins[@]}"; do
	case $b in
	spire-agent | spire-server) ;;
	*)
		echo "build.sh: unknown binary $b: use spire-agent and/or spire-server" >&2
		exit 2
		;;
	esac
	if have "$b"; then
		echo "$out/$b is SPIRE $version already"
	else
		want+=("./cmd/$b")
	fi
done
[ ${#want[@]} -eq 0 ] && exit 0

work=$(mktemp -d "${TMPDIR:-/tmp}/spire-build-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work" # outside our module: SPIRE resolves with its own go.mod

# go mod download works outside a module; go install ...@v is refused here
# because it also lists SPIRE's versions, which the proxy may not allow.
download() {
	"$go" mod download -json "github.com/spiffe/spire@v$version"
}
if ! json=$(GOFLAGS=-mod=mod download); then
	echo "build.sh: downloading SPIRE $version failed: $json" >&2
	exit 1
fi
src=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
	echo "build.sh: go mod download did not say where SPIRE $version is: $json" >&2
	exit 1
fi

# The module cache is read-only; SPIRE's build may update its own go.sum.
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"

ldflags="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=$version"
build() {
	GOFLAGS=-mod=mod "$go" build -trimpath -ldflags "$ldflags" -o "$work/bin/" "${want[@]}"
}
mkdir -p "$work/bin"
echo "building SPIRE $version: ${want[*]} (minutes on a cold Go build cache)"
start=$(date +%s)
if ! build 2>"$work/build.log"; then
	# The lead's known way when a dependency's checksum lookup fails: skip
	# the checksum database for this one build of SPIRE, outside our module.
	if grep -qiE 'sum\.golang\.org|checksum|verifying .*go\.mod|SECURITY ERROR' "$work/build.log"; then
		echo "build.sh: checksum lookup failed; retrying this SPIRE build with GOSUMDB=off" >&2
		GOSUMDB=off build
	else
		cat "$work/build.log" >&2
		exit 1
	fi
fi
echo "built in $(($(date +%s) - start))s"

mkdir -p "$out"
for b in "${want[@]}"; do
	b=${b#./cmd/}
	# Rename into place, so a half-written binary never looks built.
	cp "$work/bin/$b" "$out/.$b.tmp"
	mv "$out/.$b.tmp" "$out/$b"
	have "$b" || {
		echo "build.sh: $out/$b does not report version $version" >&2
		exit 1
	}
	echo "$out/$b"
done
