package agent_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/kubejoin/kubejointest"
	"github.com/wid-project/wid/internal/core/resource"
)

// An agent on a Kubernetes node joins with its projected service-account
// token, reading the file afresh on each join, and serves its workloads.
func TestAgentJoinsWithKubernetesServiceAccountToken(t *testing.T) {
	is := kubejointest.NewIssuer(t)
	// The issuer's JWKS URL and CA are the auth service's configuration;
	// the token names the cluster.
	srv := authtest.Start(t, authtest.WithKubernetesClusters(kubejoin.Cluster{Name: "test", APIServer: is.Server.URL, JWKSURL: is.JWKSURL(), CAFile: is.CAFile, TokenFile: is.TokenFile}))
	ctx := context.Background()
	admin := srv.AdminClient(t)
	if _, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "k8s-agent", Roles: []string{"local-agent"}}); err != nil {
		t.Fatal(err)
	}
	tokDoc, err := json.Marshal(&resource.JoinToken{
		Header: resource.Header{Kind: resource.KindJoinToken, Version: resource.V1, Metadata: resource.Metadata{Name: "k8s-nodes"}},
		Spec: resource.JoinTokenSpec{Bot: "k8s-agent", Method: resource.JoinMethodKubernetes, Kubernetes: &resource.KubernetesJoin{
			Allow: []resource.KubernetesAllow{{ServiceAccount: "wid:wid-agent"}}, Issuer: kubejointest.IssuerURL, Cluster: "test",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	wiDoc, err := resource.MarshalJSON(identity("node-uid", "/k8s/uid/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{tokDoc, wiDoc}}); err != nil {
		t.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "wid-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	saFile := filepath.Join(dir, "sa-token")
	socket := filepath.Join(dir, "workload.sock")
	listening := make(chan struct{}, 1)
	cfg := agent.Config{
		SocketPath: socket, DataDir: dir, Host: "node-1", AuthAddr: srv.Addr, CAPin: srv.CAPin,
		JoinToken: "k8s-nodes", JoinMethod: agent.JoinMethodKubernetes, ServiceAccountTokenFile: saFile,
		OnListen: func(string, string) { listening <- struct{}{} },
	}

	// No token mounted yet: the agent says where it looked.
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "reading the service-account token") {
		t.Fatalf("without a token file: %v", err)
	}

	// A token for another audience is refused; every kubernetes refusal
	// reads the same (token names are not revealed) and names the audience
	// a token must have.
	wrong := kubejointest.Good("https://kubernetes.default.svc", time.Now())
	if err := os.WriteFile(saFile, []byte(is.Sign(t, wrong)), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ = agent.New(cfg)
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "has audience wid:example.org") {
		t.Fatalf("with a wrong audience: %v", err)
	}

	// The kubelet rotates the file: the next join reads the new token.
	if err := os.WriteFile(saFile, []byte(is.Sign(t, kubejointest.Good(srv.KubernetesAudience(), time.Now()))), 0o600); err != nil {
		t.Fatal(err)
	}
	a, _ = agent.New(cfg)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent stopped with: %v", err)
		}
	})
	select {
	case <-listening:
	case err := <-done:
		t.Fatalf("agent stopped before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start listening")
	}
	fetchCtx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	svid, err := workloadapi.FetchX509SVID(fetchCtx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatalf("fetching the workload's SVID: %v", err)
	}
	if got, want := svid.ID.String(), "spiffe://example.org/k8s/uid/"+uid; got != want {
		t.Errorf("SVID ID = %s, want %s", got, want)
	}
	joins := kubeJoinEvents(t, srv, "bot.join")
	if len(joins) != 1 || joins[0].Details["service_account"] != "wid:wid-agent" || joins[0].Host != "node-1" {
		t.Errorf("join events = %v", joins)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent")); err != nil {
		t.Errorf("the agent did not save its identity: %v", err)
	}
}

func kubeJoinEvents(t *testing.T, srv *authtest.Server, typ string) []*authv1.AuditEvent {
	t.Helper()
	resp, err := srv.AdminClient(t).ListAuditEvents(context.Background(), &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{typ}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Events
}

func TestKubernetesJoinMethodNeedsATokenFile(t *testing.T) {
	_, err := agent.New(agent.Config{SocketPath: "/tmp/x.sock", DataDir: t.TempDir(), AuthAddr: "127.0.0.1:1", JoinMethod: agent.JoinMethodKubernetes})
	if err == nil || !strings.Contains(err.Error(), "--sa-token-file") {
		t.Errorf("got %v", err)
	}
	_, err = agent.New(agent.Config{SocketPath: "/tmp/x.sock", DataDir: t.TempDir(), AuthAddr: "127.0.0.1:1", JoinMethod: "iam"})
	if err == nil || !strings.Contains(err.Error(), `join method "iam" is unknown`) {
		t.Errorf("got %v", err)
	}
}
