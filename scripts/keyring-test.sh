#!/usr/bin/env bash
# Runs widctl's login key storage against a real Secret Service: Debian's
# gnome-keyring in a private D-Bus session (scripts/deps.sh installs both).
# Everything else in `make test` uses no keyring. CI runs it; so can you:
# ./scripts/keyring-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "keyring-test: FAIL: $*" >&2; exit 1; }

if ! command -v gnome-keyring-daemon >/dev/null || ! command -v dbus-run-session >/dev/null; then
	fail "gnome-keyring or dbus is missing: run ./scripts/deps.sh"
fi

# A throwaway keyring dir; the daemon creates and unlocks a login keyring
# with the password read from its stdin, then the test talks to it over the
# private bus. The daemon leaves with the bus when the session ends.
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
out="$data/test.out"
if ! XDG_DATA_HOME="$data" XDG_RUNTIME_DIR="$data" timeout 300 dbus-run-session -- bash -c '
	echo wid-keyring-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null
	WID_KEYRING_TEST=1 go test -race -count=1 -run "^TestLoginStoreSecretService$" -v ./internal/core/loginstore/ &&
	WID_KEYRING_TEST=1 go test -count=1 -run "^TestHumanLoginSecretService$" -v ./e2e/
' </dev/null >"$out" 2>&1; then
	cat "$out" >&2
	fail "the login key round trip through the Secret Service failed (output above)"
fi
# A skip would pass silently: the tests must have run.
for test in TestLoginStoreSecretService TestHumanLoginSecretService; do
	grep -q -- "--- PASS: $test" "$out" || { cat "$out" >&2; fail "$test did not run"; }
done
echo "keyring-test: ok (widctl login puts its key in gnome-keyring's Secret Service, svid issue uses it, logout removes it)"
