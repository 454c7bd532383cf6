#!/usr/bin/env bash
# Runs widctl's login key storage against a real Secret Service: Debian's
# gnome-keyring in a private D-Bus session (installed here when missing and
# run as root). Everything else in `make test` uses no keyring.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gnome-keyring-daemon >/dev/null || ! command -v dbus-run-session >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnome-keyring dbus >/dev/null
  else
    echo "gnome-keyring is missing: install Debian's gnome-keyring and dbus (apt-get install gnome-keyring dbus)" >&2
    exit 1
  fi
fi
# A throwaway keyring dir; the daemon creates and unlocks a login keyring
# with the password read from stdin, then the test talks to it over the bus.
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
XDG_DATA_HOME="$data" dbus-run-session -- bash -c '
  echo wid-keyring-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  WID_KEYRING_TEST=1 go test -race -count=1 -run "TestLoginStoreSecretService" -v ./internal/core/client/
'
