package auth_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// loggedInUser creates role name with spec and a user of the same name
// holding it, logs the user in and returns its client.
func loggedInUser(t *testing.T, srv *authtest.Server, name string, spec resource.RoleSpec) *client.Client {
	t.Helper()
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, name, spec)}}); err != nil {
		t.Fatalf("creating role %s: %v", name, err)
	}
	u, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: name, Roles: []string{name}})
	if err != nil {
		t.Fatalf("creating user %s: %v", name, err)
	}
	id, err := login(t, srv, &authv1.LoginRequest{User: name, Invite: u.Invite, Password: alicePassword})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return dialAs(t, srv, id)
}

func rules(kind string, verbs ...string) resource.RoleSpec {
	return resource.RoleSpec{Allow: resource.RoleConditions{Rules: []resource.Rule{{Resources: []string{kind}, Verbs: verbs}}}}
}

func wantEscalationRefusal(t *testing.T, srv *authtest.Server, err error, want ...string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
	msg := status.Convert(err).Message()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("refusal %q does not say %q", msg, w)
		}
	}
	for _, ev := range auditTypes(t, srv, "access.denied") {
		if ev.Reason == msg {
			return
		}
	}
	t.Fatalf("refusal %q is not in the audit log", msg)
}

// A user allowed only to make join tokens cannot make one for the local
// agent's bot, which would give them the bot's every SVID.
func TestTokenRightsDoNotGrantTheBotsRoles(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	srv.LocalAgentClient(t) // creates bot local-agent
	mallory := loggedInUser(t, srv, "mallory", rules(resource.KindJoinToken, "create"))

	_, err := mallory.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "local-agent"})
	wantEscalationRefusal(t, srv, err, "make a join token for bot local-agent", `role "local-agent" grants SPIFFE path /**`, "[mallory]")

	// The same through a kubernetes join token written as a resource.
	tok, _ := json.Marshal(&resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: "k8s"}},
		Spec: resource.JoinTokenSpec{Bot: "local-agent", Method: resource.JoinMethodKubernetes, Kubernetes: &resource.KubernetesJoin{
			Allow: []resource.KubernetesAllow{{ServiceAccount: "ns:sa"}}, TokenReview: true,
		}},
	})
	_, err = mallory.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{tok}})
	wantEscalationRefusal(t, srv, err, "make a join token for bot local-agent")

	// A bot whose roles grant no more than mallory's is fine.
	if _, err := srv.AdminClient(t).CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "none", resource.RoleSpec{})}}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AdminClient(t).CreateBot(ctx, &authv1.CreateBotRequest{Name: "idle", Roles: []string{"none"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: "idle"}); err != nil {
		t.Fatalf("a token for a bot with nothing beyond the caller: %v", err)
	}
}

// user:update does not let a user reset (take over) a user who holds more.
func TestUserUpdateCannotResetAMorePowerfulUser(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "root", Roles: []string{"editor"}}); err != nil {
		t.Fatal(err)
	}
	spec := rules(resource.KindUser, "update", "create")
	spec.Allow.SPIFFE = []resource.SPIFFEGrant{{Path: "/team/**"}}
	helpdesk := loggedInUser(t, srv, "helpdesk", spec)

	_, err := helpdesk.ResetUser(ctx, &authv1.ResetUserRequest{Name: "root"})
	wantEscalationRefusal(t, srv, err, "reset user root", `role "editor"`)

	// Nor give a new user more than it holds.
	_, err = helpdesk.CreateUser(ctx, &authv1.CreateUserRequest{Name: "eve", Roles: []string{"editor"}})
	wantEscalationRefusal(t, srv, err, "give user eve roles [editor]")

	// A user holding no more than the caller can be reset.
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{roleDoc(t, "team-web", grant("/team/web"))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateUser(ctx, &authv1.CreateUserRequest{Name: "bob", Roles: []string{"team-web"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := helpdesk.ResetUser(ctx, &authv1.ResetUserRequest{Name: "bob"}); err != nil {
		t.Fatalf("resetting a user with less: %v", err)
	}
}

// workload_identity:create does not let a user have the local agent issue
// an SPIFFE ID the user's own roles do not grant.
func TestWorkloadIdentityCreateNeedsTheIDsGrant(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	spec := rules(resource.KindWorkloadIdentity, "create", "update")
	spec.Allow.SPIFFE = []resource.SPIFFEGrant{{Path: "/team/**"}}
	dev := loggedInUser(t, srv, "dev", spec)
	uid := "1000"
	wi := func(name, id string) []byte {
		b, _ := json.Marshal(&resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
			Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: id}, Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{
				Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &uid}},
			}}}},
		})
		return b
	}
	_, err := dev.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{wi("admin", "/svc/admin")}})
	wantEscalationRefusal(t, srv, err, "write workload_identity/admin", "/svc/admin")
	_, err = dev.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{wi("any", "/{{ workload.unix.uid }}")}})
	wantEscalationRefusal(t, srv, err, "/**")
	if _, err := dev.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{wi("mine", "/team/{{ workload.unix.uid }}")}}); err != nil {
		t.Fatalf("a workload identity inside the caller's grants: %v", err)
	}
}
