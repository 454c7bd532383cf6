package auth

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A refusal because the disk is full says so, and carries the auth
// service's mark so widctl does not mistake it for "cannot reach".
func TestNotAuditedNamesTheCause(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"store full", fmt.Errorf("recording 1 audit events: %w", fmt.Errorf("%w: database or disk is full (13)", store.ErrNoSpace)),
			"not issued: the audit log could not be written (disk full)"},
		{"ENOSPC", fmt.Errorf("recording 1 audit events: %w", &os.PathError{Op: "write", Path: "/var/lib/wid/wid.db-wal", Err: syscall.ENOSPC}),
			"not issued: the audit log could not be written (disk full)"},
		{"read-only", fmt.Errorf("recording: %w", &os.PathError{Op: "open", Path: "/var/lib/wid/wid.db-wal", Err: syscall.EROFS}),
			"not issued: the audit log could not be written (the data dir is read-only)"},
		{"stopping", fmt.Errorf("recording audit event x: %w", audit.ErrStopped),
			"not issued: the audit log could not be written (the auth service is stopping)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notAudited("not issued", tt.err)
			st := status.Convert(err)
			if st.Code() != codes.Unavailable {
				t.Errorf("code %s, want Unavailable", st.Code())
			}
			if !strings.HasPrefix(st.Message(), tt.want) {
				t.Errorf("message %q, want it to start with %q", st.Message(), tt.want)
			}
			if !hasReason(st, authv1.ErrorReasonStorage) {
				t.Errorf("status carries no %s ErrorInfo: %v", authv1.ErrorReasonStorage, st.Details())
			}
		})
	}
}

func TestMarkErrorTagsHandlerErrorsOnly(t *testing.T) {
	if !hasReason(status.Convert(markError(status.Error(codes.Unavailable, "the auth service is stopping: reconnect"))), authv1.ErrorReasonRefused) {
		t.Error("a handler's Unavailable is not marked as the auth service's answer")
	}
	if markError(nil) != nil {
		t.Error("nil became an error")
	}
	if c := status.Code(markError(status.Error(codes.Canceled, "x"))); c != codes.Canceled {
		t.Errorf("canceled became %s", c)
	}
	// A status that already names its reason keeps it.
	st := status.Convert(markError(notAudited("not issued", store.ErrNoSpace)))
	if !hasReason(st, authv1.ErrorReasonStorage) || len(st.Details()) != 1 {
		t.Errorf("details %v, want only the storage reason", st.Details())
	}
}

func hasReason(st *status.Status, reason string) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == authv1.ErrorDomain && info.Reason == reason {
			return true
		}
	}
	return false
}
