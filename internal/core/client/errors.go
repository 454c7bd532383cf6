package client

import (
	"fmt"

	"google.golang.org/grpc/status"
)

// NoJoinTokenError: an agent has no saved identity in Dir and was given
// no join token to get one. Its text says so; the command line adds how to
// get a token (a kubernetes join token's name, when Kubernetes).
type NoJoinTokenError struct {
	Dir string
	// Method is the join method asked for; a kubernetes or x509pop join
	// names its token, so the next step differs from a secret token's.
	Method string
}

func (e *NoJoinTokenError) Error() string {
	return fmt.Sprintf("the agent has no identity in %s and no join token", e.Dir)
}

// RefusedError is a call the auth service refused, told in the caller's
// words (Msg, which ends with the status's message). Status is the refusal,
// kept so that the user interface can word the next step its details name;
// it is not unwrapped, so the error stays the caller's, not a gRPC status.
type RefusedError struct {
	Msg    string
	Status *status.Status
}

func (e *RefusedError) Error() string { return e.Msg }
