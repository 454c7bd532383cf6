package tui

import (
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The TUI words the next step the auth service names as widctl does.
func TestErrTextNamesTheNextStep(t *testing.T) {
	st, err := status.New(codes.Unauthenticated, "this call needs a login").WithDetails(&errdetails.ErrorInfo{
		Domain: authv1.ErrorDomain, Reason: authv1.ErrorReasonRefused,
		Metadata: map[string]string{authv1.ErrorMetaNext: authv1.NextLogin},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := errText(st.Err()), "this call needs a login: run widctl login, or join the agent first"; got != want {
		t.Errorf("errText = %q, want %q", got, want)
	}
	if got := errText(status.Error(codes.PermissionDenied, "no rule allows it")); got != "no rule allows it" {
		t.Errorf("errText of a status without a step = %q", got)
	}
}
