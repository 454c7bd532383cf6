package advice_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/loginstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// refusal builds a status as the auth service does: msg, and an ErrorInfo
// naming the next step and, in meta (key, value, ...), what it is about.
func refusal(t *testing.T, code codes.Code, msg, next string, meta ...string) *status.Status {
	t.Helper()
	md := map[string]string{authv1.ErrorMetaNext: next}
	for i := 0; i+1 < len(meta); i += 2 {
		md[meta[i]] = meta[i+1]
	}
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Domain: authv1.ErrorDomain, Reason: authv1.ErrorReasonRefused, Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

const (
	kind = authv1.ErrorMetaKind
	name = authv1.ErrorMetaName
)

// Each next step the auth service names gets the words it had before the
// auth service stopped writing them itself.
func TestNextStepWords(t *testing.T) {
	cases := []struct {
		msg, next string
		meta      []string
		want      string
	}{
		{"issuing an SVID needs a login", authv1.NextLogin, nil,
			"issuing an SVID needs a login: run widctl login, or join the agent first"},
		{"your login expires within a minute", authv1.NextLoginRenew, nil,
			"your login expires within a minute: run widctl login"},
		{`your certificate was issued before user "alice" was reset or re-created`, authv1.NextLoginAgain, []string{name, "alice"},
			`your certificate was issued before user "alice" was reset or re-created: run widctl login again`},
		{"uid 7 may not use the admin socket: only root and the uid running widagent (0) may", authv1.NextLoginInstead, nil,
			"uid 7 may not use the admin socket: only root and the uid running widagent (0) may; log in with widctl login instead"},
		{`only an agent's bot may watch, and you are the user "alice"`, authv1.NextJoinAgent, nil,
			`only an agent's bot may watch, and you are the user "alice": join an agent with widctl bot add and widagent join instead`},
		{`this certificate was issued before bot "web" was re-created`, authv1.NextRejoin, []string{name, "web"},
			`this certificate was issued before bot "web" was re-created: join again with a new token (widctl token add --bot web)`},
		{"a join token is required", authv1.NextGetToken, nil,
			"a join token is required: get one with widctl bot add or widctl token add"},
		{"the join token is not valid", authv1.NextNewToken, nil,
			"the join token is not valid: ask an admin for a new one (widctl token add --bot NAME)"},
		{"the join token was already used", authv1.NextNewToken, []string{name, "web"},
			"the join token was already used: ask an admin for a new one (widctl token add --bot web)"},
		{"join tokens are made by the auth service so that their secret is never stored", authv1.NextTokenFromCommand, nil,
			"join tokens are made by the auth service so that their secret is never stored: use widctl token add or widctl bot add (only kubernetes and x509pop join tokens, which have no secret, are created from files)"},
		{"a kubernetes join token has no secret", authv1.NextKubernetesTokenResource, nil,
			"a kubernetes join token has no secret: create it as a resource with widctl token add --method kubernetes --name NAME or widctl create -f token.yaml"},
		{"an x509pop join token has no secret", authv1.NextX509PopTokenResource, nil,
			"an x509pop join token has no secret: create it with widctl token add --method x509pop --name NAME --ca-bundle FILE or widctl create -f token.yaml"},
		{"the kubernetes join needs the name of a kubernetes join token", authv1.NextKubernetesTokenName, nil,
			"the kubernetes join needs the name of a kubernetes join token: pass --join-token NAME (see widctl token ls)"},
		{"the kubernetes join was refused: check the join token name", authv1.NextKubernetesJoinAudit, nil,
			"the kubernetes join was refused: check the join token name; an admin finds the reason with widctl audit ls --type bot.join.denied"},
		{"an x509pop challenge is for a named join token", authv1.NextX509PopTokenName, nil,
			"an x509pop challenge is for a named join token: pass --join-token NAME (see widctl token ls)"},
		{"the x509pop join was refused: check the join token name and that the certificate is one the token admits", authv1.NextX509PopJoinAudit, nil,
			"the x509pop join was refused: check the join token name and that the certificate is one the token admits; an admin finds the reason with widctl audit ls --type bot.join.denied"},
		{`bot "edge" is locked by lock edge-lock: key leaked (until 2026-01-01T00:00:00Z)`, authv1.NextLiftLock, []string{kind, "lock", name, "edge-lock"},
			`bot "edge" is locked by lock edge-lock: key leaked (until 2026-01-01T00:00:00Z); an admin lifts it with widctl lock rm edge-lock`},
		{`"zz" is not a certificate serial`, authv1.NextSerialHex, nil,
			`"zz" is not a certificate serial: give it in hex, as widctl svid inspect and the audit log print it`},
		{"no unexpired X509-SVID with serial 0a was issued", authv1.NextCheckSerial, nil,
			"no unexpired X509-SVID with serial 0a was issued: check the serial with widctl audit ls --type svid.x509.issued; nothing was revoked"},
		{"role/x does not exist", authv1.NextList, []string{kind, "role", name, "x"},
			"role/x does not exist: list what there is with widctl get role"},
		{"role/web already exists", authv1.NextReplace, []string{kind, "role", name, "web"},
			"role/web already exists: pass --force to replace it, or update it"},
		{"stored role/web is corrupt: bad json", authv1.NextRemoveCorrupt, []string{kind, "role", name, "web"},
			"stored role/web is corrupt: bad json: remove it with widctl rm role/web and create it again, or restore the data dir from a backup"},
		{`bot "web" does not exist`, authv1.NextCreateBot, []string{kind, "bot", name, "web"},
			`bot "web" does not exist: create it with widctl bot add web --roles ROLE`},
		{"join_token/t names bot web, which does not exist", authv1.NextCreateBotFirst, []string{kind, "bot", name, "web"},
			"join_token/t names bot web, which does not exist: create it first with widctl bot add web --roles ROLE"},
		{"user/alice names roles that do not exist: a, b", authv1.NextCreateRoles, nil,
			"user/alice names roles that do not exist: a, b: create them first with widctl role create"},
		{`user "bob" does not exist`, authv1.NextCreateUser, []string{kind, "user", name, "bob"},
			`user "bob" does not exist: add it with widctl user add bob --roles ROLE`},
		{"role dev is held by user/alice", authv1.NextFreeRole, []string{kind, "role", name, "dev"},
			"role dev is held by user/alice: take it away from them first (widctl bot update NAME --roles ..., widctl user update NAME --roles ...)"},
		{"login refused: too many failed attempts; try again after 2026-01-01T00:00:00Z", authv1.NextResetUser, []string{name, "alice"},
			"login refused: too many failed attempts; try again after 2026-01-01T00:00:00Z, or ask an admin to reset the user (widctl user reset alice)"},
		{"the invite was already used", authv1.NextInviteUsed, []string{name, "alice"},
			"the invite was already used: log in with your password (without --invite), or ask an admin for a new invite (widctl user reset alice)"},
		{"the invite expired at 2026-01-01T00:00:00Z", authv1.NextNewInvite, []string{name, "alice"},
			"the invite expired at 2026-01-01T00:00:00Z: ask an admin for a new one (widctl user reset alice)"},
		{"the head to check against needs a positive seq and a hash of at most 128 characters", authv1.NextAuditHead, nil,
			"the head to check against needs a positive seq and a hash of at most 128 characters, as widctl audit verify prints it (SEQ:HASH)"},
		{"moving the x509 CA to prepare: the x509 CA moved meanwhile (it is in init now)", authv1.NextCAStatus, nil,
			"moving the x509 CA to prepare: the x509 CA moved meanwhile (it is in init now): look at it again with widctl ca status"},
		{"the x509 CA cannot move from init to prepare yet: 1 agent(s) lag: bot a", authv1.NextCAWait, nil,
			"the x509 CA cannot move from init to prepare yet: 1 agent(s) lag: bot a. Wait for them (widctl ca status shows them), or add --force to move on without them"},
	}
	for _, tc := range cases {
		t.Run(tc.next, func(t *testing.T) {
			st := refusal(t, codes.FailedPrecondition, tc.msg, tc.next, tc.meta...)
			if got := advice.Status(st); got != tc.want {
				t.Errorf("Status = %q\nwant     %q", got, tc.want)
			}
			// Wrapped with context, as callers do, it is still found.
			if got := advice.Text(fmt.Errorf("doing it: %w", st.Err())); got != tc.want {
				t.Errorf("Text = %q\nwant   %q", got, tc.want)
			}
		})
	}
}

// A status without the auth service's ErrorInfo, or naming a step this
// build does not know, is its message alone.
func TestNoNextStep(t *testing.T) {
	if got := advice.Text(status.Error(codes.NotFound, "role/x does not exist")); got != "role/x does not exist" {
		t.Errorf("plain status: %q", got)
	}
	st := refusal(t, codes.NotFound, "role/x does not exist", "FROM_A_NEWER_SERVER")
	if got := advice.Status(st); got != "role/x does not exist" {
		t.Errorf("unknown step: %q", got)
	}
	if got := advice.Text(errors.New("plain")); got != "plain" {
		t.Errorf("plain error: %q", got)
	}
}

// widctl's own core errors: a login to mend, no auth service named.
func TestLocalNextSteps(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&loginstore.LoginError{Msg: "the login profile /p.yaml is corrupt", Fix: loginstore.FixRemoveProfile},
			"connecting: the login profile /p.yaml is corrupt: remove it and run widctl login"},
		{&loginstore.LoginError{Msg: "the login key of alice is corrupt", Fix: loginstore.FixLogoutLogin},
			"connecting: the login key of alice is corrupt: run widctl logout, then widctl login"},
		{&loginstore.LoginError{Msg: "the login key is in the OS keyring, which is not available now", Fix: loginstore.FixLogin},
			"connecting: the login key is in the OS keyring, which is not available now: run widctl login"},
		{&client.RefusedError{Msg: "joining the trust domain at h:1: a join token is required",
			Status: refusal(t, codes.PermissionDenied, "a join token is required", authv1.NextGetToken)},
			"connecting: joining the trust domain at h:1: a join token is required: get one with widctl bot add or widctl token add"},
		{&client.NoJoinTokenError{Dir: "/d", Method: "x509pop"},
			"connecting: the agent has no identity in /d and no join token: pass --join-token NAME of an x509pop join token (see widctl token ls)"},
		{&client.NoJoinTokenError{Dir: "/d", Method: "kubernetes"},
			"connecting: the agent has no identity in /d and no join token: pass --join-token NAME of a kubernetes join token (see widctl token ls)"},
		{client.ErrNoTarget,
			"connecting: no auth service given: run widctl next to a running widagent, or pass --auth HOST:PORT"},
	}
	for _, tc := range cases {
		if got := advice.Text(fmt.Errorf("connecting: %w", tc.err)); got != tc.want {
			t.Errorf("Text = %q\nwant   %q", got, tc.want)
		}
	}
}

func TestExplainedChecks(t *testing.T) {
	if got := advice.Explained(authv1.ExplainCheckNoWorkloadIdentities, ""); got != ": create one with widctl create -f" {
		t.Errorf("no workload identities: %q", got)
	}
	want := "; remove it with widctl rm workload_identity/wi-07 and create it again, or restore the data dir from a backup"
	if got := advice.Explained(authv1.ExplainCheckCorrupt, "wi-07"); got != want {
		t.Errorf("corrupt: %q", got)
	}
	if got := advice.Explained("path_not_granted", ""); got != "" {
		t.Errorf("path_not_granted: %q", got)
	}
}

// The next step and what it is about cross the wire in the status's
// details: a real gRPC server and client, on an in-memory listener.
func TestNextStepCrossesTheWire(t *testing.T) {
	st := refusal(t, codes.NotFound, "role/x does not exist", authv1.NextList, kind, "role", name, "x")
	st, err := st.WithDetails(&errdetails.ResourceInfo{ResourceType: "role", ResourceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error { return st.Err() }))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	_, err = authv1.NewAuthServiceClient(conn).GetResource(t.Context(), &authv1.GetResourceRequest{Kind: "role", Name: "x"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("call: %v, want NotFound", err)
	}
	if got, want := advice.Text(err), "role/x does not exist: list what there is with widctl get role"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	var ri *errdetails.ResourceInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.ResourceInfo); ok {
			ri = r
		}
	}
	if ri.GetResourceType() != "role" || ri.GetResourceName() != "x" {
		t.Errorf("ResourceInfo after the wire: %v", ri)
	}
	if msg, reason, ok := client.ServerAnswer(err); !ok || reason != authv1.ErrorReasonRefused || msg != "role/x does not exist" {
		t.Errorf("ServerAnswer = %q, %q, %v: the step must not hide that the auth service answered", msg, reason, ok)
	}
}
