// Package advice words the next step of an error for people, in widctl's
// commands. The core says what went wrong and types which step fits: the
// auth service in its statuses' ErrorInfo (authv1.ErrorMetaNext), the
// client in its own error types. widctl's commands and the TUI show what
// Text returns. internal/core must never import this package: the core
// names no client's commands.
package advice

import (
	"errors"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/loginstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// Text is err as one sentence with its next step: a gRPC status's message
// (without the "rpc error: code = ..." wrapping), or err's text, followed
// by the step its type names, if any.
func Text(err error) string {
	if err == nil {
		return ""
	}
	if st, ok := grpcStatus(err); ok {
		return Status(st)
	}
	return err.Error() + Local(err)
}

// Suffix is the next step err names (in a status's ErrorInfo or by its
// type), worded to follow err's text, or "".
func Suffix(err error) string {
	if st, ok := grpcStatus(err); ok {
		return Next(st)
	}
	return Local(err)
}

// Status is a status's message followed by the next step its ErrorInfo
// names, if any.
func Status(st *status.Status) string {
	return st.Message() + Next(st)
}

// Next is the next step a status's ErrorInfo names, worded to follow its
// message (it starts with its own separator), or "" when it names none.
func Next(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == authv1.ErrorDomain {
			return step(info.GetMetadata())
		}
	}
	return ""
}

// step words the next step named in an ErrorInfo's metadata.
func step(md map[string]string) string {
	name := md[authv1.ErrorMetaName]
	if name == "" {
		name = "NAME"
	}
	switch md[authv1.ErrorMetaNext] {
	case authv1.NextLogin:
		return ": run widctl login, or join the agent first"
	case authv1.NextLoginRenew:
		return ": run widctl login"
	case authv1.NextLoginAgain:
		return ": run widctl login again"
	case authv1.NextLoginInstead:
		return "; log in with widctl login instead"
	case authv1.NextJoinAgent:
		return ": join an agent with widctl bot add and widagent join instead"
	case authv1.NextRejoin:
		return ": join again with a new token (widctl token add --bot " + name + ")"
	case authv1.NextGetToken:
		return ": get one with widctl bot add or widctl token add"
	case authv1.NextNewToken:
		return ": ask an admin for a new one (widctl token add --bot " + name + ")"
	case authv1.NextTokenFromCommand:
		return ": use widctl token add or widctl bot add (only kubernetes and x509pop join tokens, which have no secret, are created from files)"
	case authv1.NextKubernetesTokenResource:
		return ": create it as a resource with widctl token add --method kubernetes --name NAME or widctl create -f token.yaml"
	case authv1.NextX509PopTokenResource:
		return ": create it with widctl token add --method x509pop --name NAME --ca-bundle FILE or widctl create -f token.yaml"
	case authv1.NextKubernetesTokenName, authv1.NextX509PopTokenName:
		return ": pass --join-token NAME (see widctl token ls)"
	case authv1.NextKubernetesJoinAudit, authv1.NextX509PopJoinAudit:
		return "; an admin finds the reason with widctl audit ls --type bot.join.denied"
	case authv1.NextLiftLock:
		return "; an admin lifts it with widctl lock rm " + name
	case authv1.NextSerialHex:
		return ": give it in hex, as widctl svid inspect and the audit log print it"
	case authv1.NextCheckSerial:
		return ": check the serial with widctl audit ls --type svid.x509.issued; nothing was revoked"
	case authv1.NextList:
		return ": list what there is with widctl get " + md[authv1.ErrorMetaKind]
	case authv1.NextReplace:
		return ": pass --force to replace it, or update it"
	case authv1.NextRemoveCorrupt:
		return ": remove it with widctl rm " + md[authv1.ErrorMetaKind] + "/" + name + " and create it again, or restore the data dir from a backup"
	case authv1.NextCreateBot:
		return ": create it with widctl bot add " + name + " --roles ROLE"
	case authv1.NextCreateBotFirst:
		return ": create it first with widctl bot add " + name + " --roles ROLE"
	case authv1.NextCreateRoles:
		return ": create them first with widctl role create"
	case authv1.NextCreateUser:
		return ": add it with widctl user add " + name + " --roles ROLE"
	case authv1.NextFreeRole:
		return ": take it away from them first (widctl bot update NAME --roles ..., widctl user update NAME --roles ...)"
	case authv1.NextResetUser:
		return ", or ask an admin to reset the user (widctl user reset " + name + ")"
	case authv1.NextInviteUsed:
		return ": log in with your password (without --invite), or ask an admin for a new invite (widctl user reset " + name + ")"
	case authv1.NextNewInvite:
		return ": ask an admin for a new one (widctl user reset " + name + ")"
	case authv1.NextAuditHead:
		return ", as widctl audit verify prints it (SEQ:HASH)"
	case authv1.NextCAStatus:
		return ": look at it again with widctl ca status"
	case authv1.NextCAWait:
		return ". Wait for them (widctl ca status shows them), or add --force to move on without them"
	}
	return ""
}

// Explained is the next step after the reason of an explain answer, or
// of one workload identity in it, whose failed check is check; identity
// names the workload identity. It starts with its own separator; "" when
// the check names no step.
func Explained(check, identity string) string {
	switch check {
	case authv1.ExplainCheckNoWorkloadIdentities:
		return ": create one with widctl create -f"
	case authv1.ExplainCheckCorrupt:
		return "; remove it with widctl rm workload_identity/" + identity + " and create it again, or restore the data dir from a backup"
	}
	return ""
}

// Local is the next step of an error of widctl's own core (the client:
// its login, its configuration), worded to follow err's text, or "".
func Local(err error) string {
	var (
		le *loginstore.LoginError
		nj *client.NoJoinTokenError
		re *client.RefusedError
	)
	switch {
	case errors.As(err, &re):
		return Next(re.Status)
	case errors.As(err, &nj) && nj.Method == "kubernetes":
		return ": pass --join-token NAME of a kubernetes join token (see widctl token ls)"
	case errors.As(err, &nj) && nj.Method == "x509pop":
		return ": pass --join-token NAME of an x509pop join token (see widctl token ls)"
	case errors.As(err, &nj):
		return ": create one with 'widctl bot create NAME --roles ROLE' (or 'widctl token create --bot NAME') and pass --join-token"
	case errors.As(err, &le):
		switch le.Fix {
		case loginstore.FixLogin:
			return ": run widctl login"
		case loginstore.FixRemoveProfile:
			return ": remove it and run widctl login"
		case loginstore.FixLogoutLogin:
			return ": run widctl logout, then widctl login"
		}
	case errors.Is(err, client.ErrNoTarget):
		return ": run widctl next to a running widagent, or pass --auth HOST:PORT"
	}
	return ""
}

func grpcStatus(err error) (*status.Status, bool) {
	// errors.As keeps the status's own message: status.FromError would
	// replace it with the whole wrapped chain.
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil, false
	}
	st := se.GRPCStatus()
	return st, st != nil
}
