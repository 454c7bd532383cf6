package auth

import (
	"context"
	"errors"
	"strings"
	"syscall"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
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

// refusal is a refusal whose ErrorInfo names the next step (one of
// authv1's Next* constants) and, in meta (key, value, ...), what the step
// is about. msg says what went wrong; the client adds the step in its own
// commands' words, so the auth service names none of them. A step about a
// resource (meta holds ErrorMetaKind and ErrorMetaName) also carries a
// ResourceInfo.
func refusal(code codes.Code, msg, next string, meta ...string) error {
	md := map[string]string{authv1.ErrorMetaNext: next}
	for i := 0; i+1 < len(meta); i += 2 {
		md[meta[i]] = meta[i+1]
	}
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Domain: authv1.ErrorDomain, Reason: authv1.ErrorReasonRefused, Metadata: md}}
	if kind, name := md[authv1.ErrorMetaKind], md[authv1.ErrorMetaName]; kind != "" && name != "" {
		details = append(details, &errdetails.ResourceInfo{ResourceType: kind, ResourceName: name})
	}
	st := status.New(code, msg)
	if d, err := st.WithDetails(details...); err == nil {
		return d.Err()
	}
	return st.Err()
}

// refMeta is the ErrorInfo metadata naming the resource ref ("kind/name";
// a ref without a slash, such as "resources", names none).
func refMeta(ref string) []string {
	kind, name, ok := strings.Cut(ref, "/")
	if !ok {
		return []string{authv1.ErrorMetaKind, ref}
	}
	return []string{authv1.ErrorMetaKind, kind, authv1.ErrorMetaName, name}
}

// precondition passes a status through (a refusal that names its next
// step) and makes any other error a FailedPrecondition.
func precondition(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.FailedPrecondition, err.Error())
}

// withPrefix puts prefix before err's status message and keeps its code
// and details (the next step a client words).
func withPrefix(prefix string, err error) error {
	p := status.Convert(err).Proto()
	p.Message = prefix + p.Message
	return status.FromProto(p).Err()
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
