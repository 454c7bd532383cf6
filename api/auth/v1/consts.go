package authv1

import "time"

// SignerWarmingUp is what an agent reports in ReportAgentStatusRequest's
// signed_by while it has just started: workloads that followed its previous
// process may still serve SVIDs it cannot see yet, so the auth service holds
// back rotation steps that would drop a key.
const SignerWarmingUp = "warming-up"

// Keepalive pings on a TCP connection to the auth service: clients send one
// after KeepaliveTime without traffic (gRPC's least) and drop the connection
// when no answer comes within KeepaliveTimeout; the auth service permits
// pings this often.
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 3 * time.Second
)

// SVID types, as WorkloadSVIDRequest's type, the agent's cache and metrics
// and widctl svid issue --type name them.
const (
	SVIDTypeX509 = "x509"
	SVIDTypeJWT  = "jwt"
	SVIDTypeWIT  = "wit"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo detail that the auth
// service attaches to every error its handlers return. A status without it
// came from the gRPC transport (no connection, connection lost), so clients
// can tell "the auth service refused, and said why" from "the auth service
// could not be reached" even when both carry the code Unavailable.
const ErrorDomain = "auth.wid"

// Reasons in that ErrorInfo.
const (
	// ErrorReasonRefused: the auth service handled the call and refused it;
	// the status message says why.
	ErrorReasonRefused = "REFUSED"
	// ErrorReasonStorage: the auth service could not write its store or its
	// audit log (disk full, read-only file system); retry once an admin has
	// fixed that.
	ErrorReasonStorage = "STORAGE"
)
