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

// Keys of that ErrorInfo's metadata. The auth service says what went wrong
// in the status message and, under ErrorMetaNext, which next step fits; the
// client words the step in its own commands (widctl's, the TUI's), so the
// auth service names no client's commands. ErrorMetaKind and ErrorMetaName
// name the resource the step is about, when there is one.
const (
	ErrorMetaNext = "next"
	ErrorMetaKind = "kind"
	ErrorMetaName = "name"
	// ErrorMetaDocument is the 1-based number of the document of a
	// CreateResource batch that failed.
	ErrorMetaDocument = "document"
)

// Next steps, as ErrorInfo.Metadata[ErrorMetaNext].
const (
	// NextLogin: the call needs a login, or an agent's bot identity.
	NextLogin = "LOGIN"
	// NextLoginRenew: the caller's login is about to end.
	NextLoginRenew = "LOGIN_RENEW"
	// NextLoginAgain: the user was reset or re-created since the login.
	NextLoginAgain = "LOGIN_AGAIN"
	// NextLoginInstead: the admin socket refused the caller's uid.
	NextLoginInstead = "LOGIN_INSTEAD"
	// NextJoinAgent: an agent RPC called by a user or an admin.
	NextJoinAgent = "JOIN_AGENT"
	// NextRejoin: bot ErrorMetaName was re-created since its certificate.
	NextRejoin = "REJOIN"
	// NextGetToken: a join without a join token.
	NextGetToken = "GET_TOKEN"
	// NextNewToken: the join token is unknown, used or expired; the bot
	// is ErrorMetaName when known.
	NextNewToken = "NEW_TOKEN"
	// NextTokenFromCommand: a secret join token sent as a document.
	NextTokenFromCommand = "TOKEN_FROM_COMMAND"
	// NextKubernetesTokenResource: a kubernetes join token made as a
	// secret token.
	NextKubernetesTokenResource = "KUBERNETES_TOKEN_RESOURCE"
	// NextX509PopTokenResource: an x509pop join token made as a secret
	// token.
	NextX509PopTokenResource = "X509POP_TOKEN_RESOURCE"
	// NextKubernetesTokenName: a kubernetes join without a token name.
	NextKubernetesTokenName = "KUBERNETES_TOKEN_NAME"
	// NextKubernetesJoinAudit: a kubernetes join refused; the audit log
	// says why.
	NextKubernetesJoinAudit = "KUBERNETES_JOIN_AUDIT"
	// NextX509PopTokenName: an x509pop join or challenge without a token
	// name.
	NextX509PopTokenName = "X509POP_TOKEN_NAME"
	// NextX509PopJoinAudit: an x509pop join refused; the audit log says
	// why.
	NextX509PopJoinAudit = "X509POP_JOIN_AUDIT"
	// NextLiftLock: lock ErrorMetaName holds on the caller or what it
	// asked for; an admin may remove it.
	NextLiftLock = "LIFT_LOCK"
	// NextSerialHex: a certificate serial not in hex.
	NextSerialHex = "SERIAL_HEX"
	// NextCheckSerial: no unexpired X509-SVID has the serial to revoke.
	NextCheckSerial = "CHECK_SERIAL"
	// NextList: resource ErrorMetaKind/ErrorMetaName does not exist.
	NextList = "LIST"
	// NextReplace: resource ErrorMetaKind/ErrorMetaName already exists.
	NextReplace = "REPLACE"
	// NextRemoveCorrupt: stored ErrorMetaKind/ErrorMetaName does not decode.
	NextRemoveCorrupt = "REMOVE_CORRUPT"
	// NextCreateBot: bot ErrorMetaName does not exist.
	NextCreateBot = "CREATE_BOT"
	// NextCreateBotFirst: a join token names bot ErrorMetaName, which does
	// not exist.
	NextCreateBotFirst = "CREATE_BOT_FIRST"
	// NextCreateRoles: a user or bot names roles that do not exist.
	NextCreateRoles = "CREATE_ROLES"
	// NextCreateUser: user ErrorMetaName does not exist.
	NextCreateUser = "CREATE_USER"
	// NextFreeRole: role ErrorMetaName is held by users or bots.
	NextFreeRole = "FREE_ROLE"
	// NextResetUser: user ErrorMetaName is locked out.
	NextResetUser = "RESET_USER"
	// NextInviteUsed: user ErrorMetaName's invite was used.
	NextInviteUsed = "INVITE_USED"
	// NextNewInvite: user ErrorMetaName's invite expired.
	NextNewInvite = "NEW_INVITE"
	// NextAuditHead: an audit head not in the form audit verify prints.
	NextAuditHead = "AUDIT_HEAD"
	// NextCAStatus: the CA moved while a rotation step was being made.
	NextCAStatus = "CA_STATUS"
	// NextCAWait: agents lag behind a CA rotation step.
	NextCAWait = "CA_WAIT"
)

// Checks in ExplainResponse and WorkloadExplanation that a client words a
// next step for, besides those the rbac package names.
const (
	// ExplainCheckNoWorkloadIdentities: the trust domain has no workload
	// identities to explain.
	ExplainCheckNoWorkloadIdentities = "no_workload_identities"
	// ExplainCheckCorrupt: the stored workload identity does not decode.
	ExplainCheckCorrupt = "corrupt"
)
