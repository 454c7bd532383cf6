#!/usr/bin/env bash
# Runs the real `widctl tui` in tmux against a real `widagent start`, sends
# keys, captures the pane and checks what it shows. CI runs it; so can you:
#   ./scripts/tui-tmux.sh
# It needs tmux (scripts/deps.sh installs it).
set -euo pipefail

cd "$(dirname "$0")/.."

command -v tmux >/dev/null || { echo "tui-tmux: FAIL: tmux is missing: run ./scripts/deps.sh" >&2; exit 1; }

work=$(mktemp -d /tmp/wid-tui-tmux.XXXXXX)
session="wid-tui"
agent_pid=""
# A tmux server of our own on a socket in the work dir: nothing of the
# user's tmux (or another run's) is seen or killed.
tmux() { command tmux -S "$work/tmux.sock" "$@"; }
cleanup() {
	tmux kill-server 2>/dev/null || true
	if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "tui-tmux: FAIL: $*" >&2
	echo "--- pane ---" >&2
	tmux capture-pane -p -t "$session" >&2 2>/dev/null || true
	echo "--- widagent ---" >&2
	tail -20 "$work/agent.log" >&2 || true
	exit 1
}

go build -o "$work/bin/" ./cmd/widagent ./cmd/widctl || fail "go build"
# Port 0: the kernel picks a free port, widagent prints it, and the restart
# below reuses it (the TUI reconnects to the same address).
"$work/bin/widagent" start --data-dir "$work/data" --auth-listen 127.0.0.1:0 \
	--workload-socket "$work/workload.sock" >"$work/agent.log" 2>&1 &
agent_pid=$!

# until TEXT [SECONDS]: poll until TEXT shows somewhere; a shell script has no
# event to wait on, so it looks every 100 ms.
until_file() { for _ in $(seq 1 "${2:-100}"); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }
pane() { tmux capture-pane -p -t "$session"; }
# shows TEXT: the pane shows TEXT now. Captured first: with pipefail, grep -q
# leaving early could fail the capture with SIGPIPE and read as "not shown".
shows() { local p; p=$(pane) || return 1; grep -qF -- "$1" <<<"$p"; }
# snap NAME: with TUI_TMUX_SNAPSHOTS=DIR, keep the pane as DIR/NAME.txt to read.
snap() { if [ -n "${TUI_TMUX_SNAPSHOTS:-}" ]; then mkdir -p "$TUI_TMUX_SNAPSHOTS" && pane >"$TUI_TMUX_SNAPSHOTS/$1.txt"; fi; }
until_pane() {
	local deadline=$(( ${2:-5} * 10 ))
	for _ in $(seq 1 "$deadline"); do shows "$1" && return 0; sleep 0.1; done
	fail "the pane never showed \"$1\""
}

until_file "$work/data/admin.sock" 150 || fail "widagent start made no admin socket"
until_file "$work/workload.sock" 150 || fail "widagent start made no workload socket"
auth_addr=$(sed -n 's/^ *auth address: *//p' "$work/agent.log" | head -1)
[ -n "$auth_addr" ] || fail "widagent start printed no auth address"

tmux new-session -d -s "$session" -x 120 -y 40 \
	"env NO_COLOR=1 WIDCTL_ADMIN_SOCKET=$work/data/admin.sock $work/bin/widctl tui; sleep 30"
until_pane "connected"
until_pane "spiffe://example.org"

# A workload fetches its SVID: it is issued while the dashboard watches.
SPIFFE_ENDPOINT_SOCKET="unix://$work/workload.sock" "$work/bin/widagent" api fetch x509 >"$work/fetch.out" 2>&1 ||
	fail "the workload could not fetch an X509-SVID: $(cat "$work/fetch.out")"
until_pane "/uid/$(id -u)"
until_pane "x509"
snap svids
# enter opens the newest event: the certificate the agent was issued.
tmux send-keys -t "$session" Enter
until_pane "Certificate"
until_pane "uri sans"
snap detail
tmux send-keys -t "$session" Escape
until_pane "last minute"

tmux send-keys -t "$session" 2
until_pane "Workload attestations"
tmux send-keys -t "$session" 3
until_pane "spiffe  standby"
until_pane "kid "
snap bundles
# A rotation step shows on the Bundles tab as it happens.
"$work/bin/widctl" --admin-socket "$work/data/admin.sock" ca rotate --type spiffe --phase init >/dev/null
until_pane "init (manual) -> update_clients"
until_pane "additional"
snap bundles_rotating
tmux send-keys -t "$session" 4
until_pane "editor"
until_pane "local-agent"
snap roles
tmux send-keys -t "$session" '?'
until_pane "shift+tab"
# One key at a time, each after the last one's effect: keys sent together
# arrive as one read, which no single binding matches.
tmux send-keys -t "$session" '?'
until_pane "e on a role explains"
tmux send-keys -t "$session" 1
until_pane "last minute"
tmux send-keys -t "$session" /
until_pane "/filter"
tmux send-keys -t "$session" -l "uid"
until_pane "/uid"
tmux send-keys -t "$session" Enter
until_pane "esc clears"

# The pane drew no colour: NO_COLOR is honoured end to end.
if tmux capture-pane -p -e -t "$session" | grep -q $'\x1b\[[0-9;]*[1-9][0-9;]*m'; then
	fail "colour escapes with NO_COLOR set"
fi

# Kill the auth service under it: "reconnecting"; start it again on the
# same data dir: it resumes after the last event it showed, so the SVID
# issued before shows once and the one issued after shows too.
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
tmux send-keys -t "$session" Escape
until_pane "reconnecting"
rm -f "$work/workload.sock"
"$work/bin/widagent" start --data-dir "$work/data" --auth-listen "$auth_addr" \
	--workload-socket "$work/workload.sock" >>"$work/agent.log" 2>&1 &
agent_pid=$!
until_file "$work/workload.sock" 150 || fail "widagent start did not come back"
until_pane "connected" 15
snap reconnected
SPIFFE_ENDPOINT_SOCKET="unix://$work/workload.sock" "$work/bin/widagent" api fetch x509 >"$work/fetch.out" 2>&1 ||
	fail "the workload could not fetch an X509-SVID after the restart: $(cat "$work/fetch.out")"
for _ in $(seq 1 50); do [ "$(pane | grep -cF " /uid/$(id -u) ")" -ge 2 ] && break; sleep 0.1; done
rows=$(pane | grep -cF " /uid/$(id -u) " || true)
[ "$rows" -eq 2 ] || fail "after the restart the SVIDs tab shows $rows issuances of /uid/$(id -u), want 2 (one before, one after)"
snap after_restart

# Revoking the workload's SVIDs marks them REVOKED; a lock on its SPIFFE ID
# is listed on the Roles tab and marks the workload identity LOCKED.
"$work/bin/widctl" --admin-socket "$work/data/admin.sock" svid revoke --spiffe-id "/uid/$(id -u)" --reason "tui check" >/dev/null ||
	fail "svid revoke of /uid/$(id -u)"
until_pane "REVOKED"
snap revoked
"$work/bin/widctl" --admin-socket "$work/data/admin.sock" lock create --spiffe-id "/uid/$(id -u)" --reason "tui check" >/dev/null ||
	fail "lock create on /uid/$(id -u)"
tmux send-keys -t "$session" 4
until_pane "LOCKED SPIFFE ID /uid/$(id -u)"
snap locked
tmux send-keys -t "$session" 1
until_pane "last minute"

# Too small: it says so.
tmux resize-window -t "$session" -x 60 -y 20 2>/dev/null || tmux resize-pane -t "$session" -x 60 -y 20
until_pane "needs at least 80x24"
tmux resize-window -t "$session" -x 120 -y 40 2>/dev/null || tmux resize-pane -t "$session" -x 120 -y 40
until_pane "connected"

tmux send-keys -t "$session" q
for _ in $(seq 1 50); do shows "connected" || break; sleep 0.1; done
shows "connected" && fail "q did not quit"
tmux kill-session -t "$session" 2>/dev/null || true

# As a logged-in user whose role grants a SPIFFE path and no admin rules:
# connected (never "reconnecting"), on a tab it may see, and one sentence
# naming the missing rule on each tab it may not.
admin() { "$work/bin/widctl" --admin-socket "$work/data/admin.sock" "$@"; }
admin role create dev --spiffe-path '/team/alice/**' >/dev/null || fail "role create dev"
login_cmd=$(admin user add alice --roles dev --format json | sed -n 's/.*"login_command": *"widctl \([^"]*\)".*/\1/p')
[ -n "$login_cmd" ] || fail "user add printed no login command"
user_env=(env -u WIDCTL_ADMIN_SOCKET HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share" DBUS_SESSION_BUS_ADDRESS=)
mkdir -p "$work/home"
# shellcheck disable=SC2086 # the login command is words to split
echo "correct horse battery staple" | "${user_env[@]}" "$work/bin/widctl" $login_cmd --password-stdin >"$work/login.out" 2>&1 ||
	fail "alice could not log in: $(cat "$work/login.out")"
session="wid-tui-user"
tmux new-session -d -s "$session" -x 100 -y 30 "${user_env[*]} NO_COLOR=1 $work/bin/widctl tui; sleep 30"
until_pane "you are user alice"
until_pane "Trust bundle and CAs"
until_pane "not allowed by your roles"
snap user_bundles
shows "reconnecting" && fail "the user's dashboard says reconnecting"
tmux send-keys -t "$session" 1
until_pane 'Your roles do not let you see the audit log'
until_pane '{resources: [audit], verbs: [list]}'
snap user_svids
tmux send-keys -t "$session" 4
until_pane 'Your roles do not let you see roles'
snap user_roles
if pane | grep -qE 'rpc error|PermissionDenied|reconnecting'; then fail "the user's dashboard shows a raw gRPC error or reconnects"; fi
tmux send-keys -t "$session" q
echo "tui-tmux: ok (live SVID with its certificate, tabs, a rotation step on Bundles, filter, help, NO_COLOR, reconnect without duplicates, too-small message, revoked and locked marks, quit; as a user: the tabs it may see, one sentence for the rest)"
