package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestExplain(t *testing.T) {
	const target = "/run/wid/admin.sock"
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantMsg  string
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "role \"x\": spec.allow.spiffe[1].path is empty"), ExitBadInput, `role "x": spec.allow.spiffe[1].path is empty`},
		{"already exists", status.Error(codes.AlreadyExists, "role/web already exists: pass --force"), ExitBadInput, "role/web already exists: pass --force"},
		{"failed precondition", status.Error(codes.FailedPrecondition, "role web is held by bot a"), ExitBadInput, "role web is held by bot a"},
		{"out of range", status.Error(codes.OutOfRange, "ttl too long"), ExitBadInput, "ttl too long"},
		{"unauthenticated", status.Error(codes.Unauthenticated, "this call needs a login"), ExitAuth, "this call needs a login"},
		{"permission denied", status.Error(codes.PermissionDenied, "user:bob may not create roles"), ExitAuth, "user:bob may not create roles"},
		{"not found", status.Error(codes.NotFound, "role/x does not exist"), ExitNotFound, "role/x does not exist"},
		{"unavailable", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial unix /run/wid/admin.sock: connect: no such file or directory"`), ExitUnavailable, "cannot reach the auth service at /run/wid/admin.sock: is widagent running?"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), ExitUnavailable, "cannot reach the auth service at /run/wid/admin.sock: is widagent running?"},
		{"wrong pin", status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: the auth service's CA does not match the pin sha256:00: check --ca-pin"`), ExitAuth, "the auth service's CA does not match the pin sha256:00: check --ca-pin"},
		{"other tls failure", status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: remote error: tls: bad certificate"`), ExitAuth, "the TLS handshake with the auth service at /run/wid/admin.sock failed (remote error: tls: bad certificate): check --ca-pin and --identity"},
		{"socket permission", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial unix /run/wid/admin.sock: connect: permission denied"`), ExitAuth, "cannot open the admin socket /run/wid/admin.sock: permission denied: run widctl as the user that runs widagent, or as root"},
		{"internal", status.Error(codes.Internal, "storing role/x: disk full"), ExitError, "storing role/x: disk full"},
		{"refused for a full disk", serverStatus(codes.Unavailable, "not issued: the audit log could not be written (disk full): an admin must free space on the auth service's data dir; then try again"), ExitUnavailable, "not issued: the audit log could not be written (disk full): an admin must free space on the auth service's data dir; then try again"},
		{"stopping", serverStatus(codes.Unavailable, "the auth service is stopping: reconnect"), ExitUnavailable, "the auth service is stopping: reconnect"},
		{"wrapped status keeps its own message", fmt.Errorf("creating role: %w", status.Error(codes.NotFound, "role/x does not exist")), ExitNotFound, "role/x does not exist"},
		{"input error", InputErrorf("--max-ttl is wrong"), ExitBadInput, "--max-ttl is wrong"},
		{"error with status cause", &Error{Code: ExitError, Err: status.Error(codes.NotFound, "gone")}, ExitError, "gone"},
		{"silent", SilentError(ExitError), ExitError, ""},
		{"interrupted", fmt.Errorf("listing: %w", context.Canceled), ExitInterrupted, ""},
		{"canceled status", status.Error(codes.Canceled, "context canceled"), ExitInterrupted, ""},
		{"plain", errors.New("the auth service sent no certificate"), ExitError, "the auth service sent no certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Explain(tt.err, target)
			if r.Code != tt.wantCode || r.Message != tt.wantMsg {
				t.Errorf("Explain = (%d, %q), want (%d, %q)", r.Code, r.Message, tt.wantCode, tt.wantMsg)
			}
			if strings.Contains(r.Message, "rpc error") || strings.Contains(r.Message, "code =") {
				t.Errorf("message leaks the gRPC error: %q", r.Message)
			}
		})
	}
}

func TestHandleErrorShowsChainOnlyWithDebug(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	err := fmt.Errorf("getting role: %w", status.Error(codes.NotFound, "role/x does not exist: list what there is with widctl get role"))
	for _, debug := range []bool{false, true} {
		t.Run(fmt.Sprint("debug=", debug), func(t *testing.T) {
			if debug {
				t.Setenv(DebugEnv, "1")
			} else {
				t.Setenv(DebugEnv, "")
			}
			ios, _, _, errOut := iostreams.Test()
			f := NewFactory(ios)
			if code := HandleError(f, err); code != ExitNotFound {
				t.Errorf("code = %d, want %d", code, ExitNotFound)
			}
			got := errOut.String()
			first, rest, _ := strings.Cut(got, "\n")
			if first != "error: role/x does not exist: list what there is with widctl get role" {
				t.Errorf("first line = %q", first)
			}
			hasChain := strings.Contains(rest, "rpc error: code = NotFound") && strings.Contains(rest, "getting role")
			if hasChain != debug {
				t.Errorf("chain shown = %v with debug %v:\n%s", hasChain, debug, got)
			}
		})
	}
}

// serverStatus is a status as the auth service's handlers send it: with
// its ErrorInfo.
func serverStatus(c codes.Code, msg string) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.ErrorInfo{Domain: authv1.ErrorDomain, Reason: authv1.ErrorReasonStorage})
	if err != nil {
		panic(err)
	}
	return st.Err()
}
