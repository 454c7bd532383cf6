#!/usr/bin/env bash
# The system parts `make test` needs besides Go, in one place:
#   gnome-keyring and dbus  a real Secret Service (scripts/keyring-test.sh)
#   tmux                    the real widctl tui in a terminal (scripts/tui-tmux.sh)
#   PostgreSQL 15           initdb and postgres for the --store postgres tests
# `make test` runs it first. What is missing is installed from Debian's
# packages (apt-get, as root or with sudo); with --check, or where there is
# no apt-get, nothing is installed and each missing part is named with the
# package that brings it. Exit status 1 when something is still missing.
#   ./scripts/deps.sh [--check]
set -euo pipefail

check_only=false
case "${1:-}" in
--check) check_only=true ;;
"") ;;
*) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

# postgres_bin prints the directory of PostgreSQL 15's initdb and postgres:
# on PATH, or where Debian's postgresql-15 puts them.
postgres_bin() {
	local d
	for d in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")" /usr/lib/postgresql/15/bin; do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && "$d/postgres" --version 2>/dev/null | grep -q ' 15\.'; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

# missing prints the Debian package of each part not on this machine.
missing() {
	command -v gnome-keyring-daemon >/dev/null || echo gnome-keyring
	command -v dbus-run-session >/dev/null || echo dbus
	command -v tmux >/dev/null || echo tmux
	postgres_bin >/dev/null || echo postgresql-15
}

want=$(missing)
if [ -n "$want" ] && ! $check_only && command -v apt-get >/dev/null; then
	sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || { echo "deps: missing $(echo $want), and installing needs root or sudo" >&2; exit 1; }
		sudo=sudo
	fi
	echo "deps: installing $(echo $want)" >&2
	# shellcheck disable=SC2086 # one word per package
	$sudo apt-get update -qq &&
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $want >/dev/null ||
		{ echo "deps: apt-get install $(echo $want) failed" >&2; exit 1; }
	want=$(missing)
fi
if [ -n "$want" ]; then
	echo "deps: missing: $(echo $want) (Debian packages; on another system install their equivalents)" >&2
	exit 1
fi
echo "deps: ok (gnome-keyring, dbus, tmux, PostgreSQL 15 in $(postgres_bin))"
