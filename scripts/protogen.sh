#!/usr/bin/env bash
# Regenerates the auth API's Go code from api/**/*.proto with pinned plugins.
# protoc comes from Debian's protobuf-compiler (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
  else
    echo "protoc is missing: install Debian's protobuf-compiler (apt-get install protobuf-compiler)" >&2
    exit 1
  fi
fi
bin="$PWD/.bin"
mkdir -p "$bin"
GOBIN="$bin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN="$bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PATH="$bin:$PATH" protoc -I api \
  --go_out=. --go_opt=module=github.com/wid-project/wid \
  --go-grpc_out=. --go-grpc_opt=module=github.com/wid-project/wid \
  $(find api -name '*.proto')
