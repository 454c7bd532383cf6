package auth

import (
	"context"
	"errors"
	"syscall"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// storageReason names, for people, why a write to the store or the audit
// log failed when the cause is the machine rather than the request: a full
// disk, a read-only file system, a stop under way. ok is false otherwise.
func storageReason(err error) (reason string, ok bool) {
	switch {
	case errors.Is(err, store.ErrNoSpace), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "disk full", true
	case errors.Is(err, store.ErrReadOnly), errors.Is(err, syscall.EROFS):
		return "the data dir is read-only", true
	case errors.Is(err, audit.ErrStopped):
		return "the auth service is stopping", true
	}
	return "", false
}

// notAudited is the refusal of an action (an issuance, a join) that was not
// done because its audit event could not be written. Its message leads with
// the outcome and the cause, e.g. "not issued: the audit log could not be
// written (disk full)", so that widctl and the agent show that rather than
// "cannot reach the auth service".
func notAudited(outcome string, err error) error {
	msg := outcome + ": the audit log could not be written"
	reason, ok := storageReason(err)
	switch {
	case ok && reason == "disk full":
		msg += " (disk full): an admin must free space on the auth service's data dir; then try again"
	case ok:
		msg += " (" + reason + "): try again shortly"
	default:
		msg += " (" + err.Error() + "): try again; if it persists, an admin finds the cause in the auth service's log"
	}
	return withReason(status.New(codes.Unavailable, msg), authv1.ErrorReasonStorage)
}

// withReason attaches the auth service's ErrorInfo to st.
func withReason(st *status.Status, reason string) error {
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: authv1.ErrorDomain, Reason: reason}); err == nil {
		return d.Err()
	}
	return st.Err()
}

// markError tags an error a handler returned as the auth service's own
// answer (see authv1.ErrorDomain). Context errors are left alone: those
// are the caller's doing.
func markError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	if st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded || len(st.Details()) > 0 {
		return err
	}
	return withReason(st, authv1.ErrorReasonRefused)
}

func markUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	return resp, markError(err)
}

func markStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return markError(handler(srv, ss))
}
