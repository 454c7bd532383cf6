package client

import (
	"errors"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ServerAnswer reports whether err is the auth service's own answer (its
// handlers mark each error they return, see authv1.ErrorDomain) rather than
// the gRPC transport's, and returns its message and reason. An Unavailable
// that the auth service sent ("not issued: the audit log could not be
// written (disk full)") must reach people as that, not as "cannot reach".
func ServerAnswer(err error) (msg, reason string, ok bool) {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return "", "", false
	}
	st := se.GRPCStatus()
	if st == nil {
		return "", "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.GetDomain() == authv1.ErrorDomain {
			return st.Message(), info.GetReason(), true
		}
	}
	return "", "", false
}
