package agent_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var uid = strconv.Itoa(os.Getuid())

// env is an auth service and an agent that joined it in-process.
type env struct {
	auth   *authtest.Server
	admin  *client.Client
	socket string
	addr   string // workloadapi address
	diag   string
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, mutate ...func(*agent.Config)) *env {
	t.Helper()
	return startWithAuth(t, nil, mutate...)
}

// startWithAuth is start with options for the auth service.
func startWithAuth(t testing.TB, authOpts []authtest.Option, mutate ...func(*agent.Config)) *env {
	t.Helper()
	srv := authtest.Start(t, authOpts...)
	return startAgentOn(t, srv, srv.AdminClient(t), mutate...)
}

// startAgentOn starts an agent that joins srv, whose admin client is admin.
func startAgentOn(t testing.TB, srv *authtest.Server, admin *client.Client, mutate ...func(*agent.Config)) *env {
	t.Helper()
	e := &env{auth: srv, admin: admin}
	dir, err := os.MkdirTemp("", "wid-agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e.socket = filepath.Join(dir, "w", "workload.sock")
	e.addr = "unix://" + e.socket
	listening := make(chan string, 1)
	cfg := agent.Config{
		SocketPath: e.socket, DataDir: dir, Host: "test-host", AuthAddr: srv.Addr, DiagAddr: "127.0.0.1:0",
		LocalIdentity: func(ctx context.Context) (*client.Identity, error) { return srv.LocalAgentIdentity(ctx, "test-host") },
		OnListen:      func(_, diag string) { listening <- diag },
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mutate {
		m(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.done; err != nil {
			t.Errorf("agent stopped with: %v", err)
		}
	})
	select {
	case e.diag = <-listening:
	case err := <-e.done:
		t.Fatalf("agent stopped before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start listening")
	}
	return e
}

func identity(name, id, hint string, rules ...resource.WorkloadRule) *resource.WorkloadIdentity {
	return &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.WorkloadIdentitySpec{
			SPIFFE: resource.WorkloadSPIFFE{ID: id, Hint: hint},
			Rules:  resource.WorkloadRules{Allow: rules},
		},
	}
}

func eq(attr, v string) resource.WorkloadRule {
	return resource.WorkloadRule{Conditions: []resource.Condition{{Attribute: attr, Eq: &v}}}
}

func (e *env) create(t testing.TB, wis ...*resource.WorkloadIdentity) {
	t.Helper()
	var docs [][]byte
	for _, wi := range wis {
		doc, err := resource.MarshalJSON(wi)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc)
	}
	if _, err := e.admin.CreateResource(context.Background(), &authv1.CreateResourceRequest{Resources: docs}); err != nil {
		t.Fatalf("creating workload identities: %v", err)
	}
}

func (e *env) remove(t *testing.T, name string) {
	t.Helper()
	if _, err := e.admin.DeleteResource(context.Background(), &authv1.DeleteResourceRequest{Kind: resource.KindWorkloadIdentity, Name: name}); err != nil {
		t.Fatalf("deleting workload identity %s: %v", name, err)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// rawClient talks to the socket without go-spiffe, to send what go-spiffe
// would not (no header) and to reach the WIT RPCs.
func rawClient(t *testing.T, e *env) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func TestGoSpiffeSourcesAgainstAgent(t *testing.T) {
	e := start(t)
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "me", eq("workload.unix.uid", uid)),
		identity("nobody", "/svc/nobody", "", eq("workload.unix.uid", "4294967294")))
	ctx := ctxT(t, 20*time.Second)
	want := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("example.org"), "/uid/"+uid)

	x509Source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(e.addr)))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	defer x509Source.Close()
	svid, err := x509Source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != want {
		t.Fatalf("SVID is %s, want %s", svid.ID, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509Source); err != nil {
		t.Fatalf("the SVID does not verify against the served bundle: %v", err)
	}
	if svid.Hint != "me" {
		t.Errorf("hint = %q, want me", svid.Hint)
	}

	jwtSource, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(e.addr)))
	if err != nil {
		t.Fatalf("NewJWTSource: %v", err)
	}
	defer jwtSource.Close()
	token, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "api", ExtraAudiences: []string{"db"}})
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if token.ID != want {
		t.Fatalf("JWT-SVID is for %s, want %s", token.ID, want)
	}
	if _, err := jwtsvid.ParseAndValidate(token.Marshal(), jwtSource, []string{"db"}); err != nil {
		t.Fatalf("the JWT-SVID does not validate against the served JWT bundle: %v", err)
	}
	again, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", ExtraAudiences: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Marshal() != token.Marshal() {
		t.Error("the same audiences in another order minted a new JWT-SVID instead of serving the cached one")
	}
	validated, err := workloadapi.ValidateJWTSVID(ctx, token.Marshal(), "api", workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if validated.ID != want || validated.Claims["sub"] != want.String() {
		t.Fatalf("ValidateJWTSVID gave %s with claims %v", validated.ID, validated.Claims)
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, token.Marshal(), "other", workloadapi.WithAddr(e.addr)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("validating for the wrong audience: %v, want InvalidArgument", err)
	}

	bundles, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(e.addr)))
	if err != nil {
		t.Fatalf("NewBundleSource: %v", err)
	}
	defer bundles.Close()
	xb, err := bundles.GetX509BundleForTrustDomain(want.TrustDomain())
	if err != nil || len(xb.X509Authorities()) == 0 {
		t.Fatalf("no X.509 bundle for the trust domain: %v", err)
	}
	jb, err := bundles.GetJWTBundleForTrustDomain(want.TrustDomain())
	if err != nil || len(jb.JWTAuthorities()) == 0 {
		t.Fatalf("no JWT bundle for the trust domain: %v", err)
	}
}

func TestWatchSeesNewIdentityWithinASecond(t *testing.T) {
	e := start(t)
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "me", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	updates := make(chan *workloadapi.X509Context, 16)
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.WatchX509Context(ctx, watcher{updates})
	first := <-updates
	if len(first.SVIDs) != 1 {
		t.Fatalf("first update has %d SVIDs, want 1", len(first.SVIDs))
	}
	created := time.Now()
	e.create(t, identity("second", "/svc/second/{{ workload.unix.uid }}", "second", eq("workload.unix.uid", uid)))
	for {
		select {
		case u := <-updates:
			if len(u.SVIDs) == 2 {
				took := time.Since(created)
				t.Logf("new identity reached the watching workload in %s", took)
				if took > time.Second {
					t.Errorf("new identity took %s to reach the workload, want under 1s", took)
				}
				// Removing it takes it away again.
				e.remove(t, "second")
				for u := range updates {
					if len(u.SVIDs) == 1 {
						return
					}
				}
			}
		case <-ctx.Done():
			t.Fatal("the watching workload never saw the new identity")
		}
	}
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w watcher) OnX509ContextWatchError(error)                  {}

func TestRefusals(t *testing.T) {
	logs := testkit.NewSyncBuffer()
	e := start(t, func(c *agent.Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	e.create(t, identity("other-uid", "/svc/other", "", eq("workload.unix.uid", "4294967294")))
	raw := rawClient(t, e)
	ctx := ctxT(t, 20*time.Second)

	// No security header: InvalidArgument, whatever the caller.
	stream, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "security header") {
		t.Fatalf("without the header: %v, want InvalidArgument naming the security header", err)
	}

	// A caller no identity matches: PermissionDenied, telling it nothing
	// about the identities there are or what their rules want.
	stream, err = raw.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.PermissionDenied || !strings.HasPrefix(msg, "no identity issued: this process matches no workload identity") {
		t.Fatalf("unmatched caller: %v, want PermissionDenied saying it matches no workload identity", err)
	}
	for _, secret := range []string{"4294967294", "other-uid", "/svc/other", "workload.unix.uid"} {
		if strings.Contains(msg, secret) {
			t.Fatalf("the refusal tells the caller %q: %s", secret, msg)
		}
	}
	// The agent's log has the detail.
	logs.WaitFor(t, `workload.unix.uid is \"`+uid+`\", not \"4294967294\"`, 5*time.Second)
	// Bundles are for entitled callers only (as SPIRE without allow_unauthenticated_verifiers).
	bs, err := raw.FetchX509Bundles(withHeader(ctx), &workload.X509BundlesRequest{})
	if err == nil {
		_, err = bs.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || strings.Contains(status.Convert(err).Message(), "4294967294") {
		t.Fatalf("bundles for an unentitled caller: %v, want PermissionDenied without the rule's detail", err)
	}

	// JWT-SVID without an audience: InvalidArgument.
	if _, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("FetchJWTSVID without audience: %v, want InvalidArgument", err)
	}
	// An audience over its limit: InvalidArgument naming it, before anything is attested or asked.
	huge := &workload.JWTSVIDRequest{Audience: []string{"api", strings.Repeat("a", 100<<10)}}
	if _, err := raw.FetchJWTSVID(withHeader(ctx), huge); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "audience[1] is 102400 bytes long, over the limit of 1024 bytes") {
		t.Fatalf("FetchJWTSVID with a 100 KB audience: %v, want InvalidArgument naming the limit", err)
	}
	if _, err := raw.ValidateJWTSVID(withHeader(ctx), &workload.ValidateJWTSVIDRequest{Audience: strings.Repeat("a", 5000), Svid: "x"}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(status.Convert(err).Message(), "audience is 5000 bytes long") {
		t.Fatalf("ValidateJWTSVID with a 5000-byte audience: %v, want InvalidArgument naming the limit", err)
	}

	// The refusal is in the audit log as an attestation with its reason.
	var found *authv1.AuditEvent
	testkit.Eventually(t, 5*time.Second, func() bool {
		resp, err := e.admin.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"workload.attest"}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if ev.Outcome == "denied" && ev.Attributes["workload.unix.uid"] == uid {
				found = ev
			}
		}
		return found != nil
	}, "no denied attestation event in the audit log")
	if !strings.Contains(found.Reason, "4294967294") || found.Attributes["workload.unix.path"] == "" {
		t.Errorf("attestation event lacks the reason or the attributes: %+v", found)
	}
}

func TestHintsUniqueAndWIT(t *testing.T) {
	e := start(t)
	e.create(t,
		identity("a", "/svc/a", "web", eq("workload.unix.uid", uid)),
		identity("b", "/svc/b", "web", eq("workload.unix.uid", uid)),
		identity("c", "/svc/c", "", eq("workload.unix.uid", uid)))
	raw := rawClient(t, e)
	ctx := withHeader(ctxT(t, 20*time.Second))

	stream, err := raw.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range resp.Svids {
		ids = append(ids, s.SpiffeId)
	}
	if strings.Join(ids, " ") != "spiffe://example.org/svc/a spiffe://example.org/svc/c" {
		t.Fatalf("SVIDs %v: want a and c (b repeats a's hint)", ids)
	}

	ws, err := raw.FetchWITSVID(ctx, &workload.WITSVIDRequest{SpiffeId: "spiffe://example.org/svc/c"})
	if err != nil {
		t.Fatal(err)
	}
	wit, err := ws.Recv()
	if err != nil {
		t.Fatalf("FetchWITSVID: %v", err)
	}
	if len(wit.Svids) != 1 || wit.Svids[0].SpiffeId != "spiffe://example.org/svc/c" {
		t.Fatalf("WIT-SVIDs %v, want one for /svc/c", wit.Svids)
	}
	wb, err := raw.FetchWITBundles(ctx, &workload.WITBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := wb.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(bundles.Bundles["spiffe://example.org"]), &jwks); err != nil || len(jwks.Keys) == 0 {
		t.Fatalf("WIT bundle %q: %v", bundles.Bundles["spiffe://example.org"], err)
	}
	tok, err := jose.ParseSignedCompact(wit.Svids[0].WitSvid, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := jwks.Key(tok.Signatures[0].Header.KeyID)
	if len(keys) != 1 || keys[0].Use != "wit-svid" {
		t.Fatalf("the WIT's kid %q is not a wit-svid key of the bundle", tok.Signatures[0].Header.KeyID)
	}
	payload, err := tok.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("the WIT-SVID does not verify against the WIT bundle: %v", err)
	}
	var claims struct {
		Sub string `json:"sub"`
		Cnf struct {
			JWK jose.JSONWebKey `json:"jwk"`
		} `json:"cnf"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var priv jose.JSONWebKey
	if err := json.Unmarshal([]byte(wit.Svids[0].WitSvidKey), &priv); err != nil || priv.IsPublic() {
		t.Fatalf("wit_svid_key is not a private JWK: %v", err)
	}
	if claims.Sub != "spiffe://example.org/svc/c" || !claims.Cnf.JWK.Valid() {
		t.Fatalf("claims %+v", claims)
	}
	pubA, _ := x509.MarshalPKIXPublicKey(claims.Cnf.JWK.Key)
	pubB, _ := x509.MarshalPKIXPublicKey(priv.Public().Key)
	if string(pubA) != string(pubB) {
		t.Fatal("the WIT's cnf key is not the key the agent handed the workload")
	}

	// JWT bundle served for validation is a SPIFFE JWT bundle.
	jbs, err := raw.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jbr, err := jbs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtbundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), jbr.Bundles["spiffe://example.org"]); err != nil {
		t.Fatalf("JWT bundle does not parse: %v", err)
	}
}

func TestMetricsAndNoPolling(t *testing.T) {
	e := start(t)
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(e.addr)); err != nil {
		t.Fatal(err)
	}
	before := authRPCs(t, e)
	// Letting time pass is the point: an idle agent must make no calls.
	time.Sleep(3 * time.Second)
	after := authRPCs(t, e)
	if after != before {
		t.Fatalf("an idle agent made %v auth calls in 3s", after-before)
	}
	body := get(t, "http://"+e.diag+"/metrics")
	for _, want := range []string{`wid_agent_workload_requests_total{code="OK",method="FetchX509SVID"}`, `wid_agent_cached_svids{type="x509"} 1`, "wid_agent_auth_connected 1", "wid_agent_workload_request_duration_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if got := get(t, "http://"+e.diag+"/readyz"); !strings.Contains(got, "ready") {
		t.Errorf("readyz: %q", got)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// authRPCs sums wid_agent_auth_rpcs_total over methods.
func authRPCs(t *testing.T, e *env) float64 {
	total := 0.0
	for _, line := range strings.Split(get(t, "http://"+e.diag+"/metrics"), "\n") {
		if strings.HasPrefix(line, "wid_agent_auth_rpcs_total{") {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			total += v
		}
	}
	return total
}

func TestFileOutputs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	e := start(t, func(c *agent.Config) {
		c.Outputs = []agent.Output{{Type: "x509", Path: "/svc/files", Dir: out}, {Type: "jwt", Path: "/svc/files", Dir: out, Audiences: []string{"db"}}}
	})
	testkit.Succeeds(t, 10*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(out, "svid.pem")); err != nil {
			return err
		}
		_, err := os.Stat(filepath.Join(out, "jwt.token"))
		return err
	}, "outputs not written")
	fi, err := os.Stat(filepath.Join(out, "svid.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	di, _ := os.Stat(out)
	if di.Mode().Perm() != 0o700 {
		t.Errorf("output dir mode %v, want 0700", di.Mode().Perm())
	}
	svid, err := x509svid.Load(filepath.Join(out, "svid.pem"), filepath.Join(out, "svid.key"))
	if err != nil {
		t.Fatalf("x509svid.Load: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/svc/files" {
		t.Fatalf("output SVID is %s", svid.ID)
	}
	token, _ := os.ReadFile(filepath.Join(out, "jwt.token"))
	if _, err := jwtsvid.ParseInsecure(strings.TrimSpace(string(token)), []string{"db"}); err != nil {
		t.Fatalf("jwt.token: %v", err)
	}
	_ = e
}

// BenchmarkFetchX509SVID: 16 go-spiffe clients, one connection each, ask
// for their X509-SVID as fast as they can, through the whole agent
// (attestation, entitlement, cache, response).
func BenchmarkFetchX509SVID(b *testing.B) {
	e := start(b)
	e.create(b, identity("me", "/uid/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid)))
	ctx := context.Background()
	// The identity reaches the agent a moment after it is created.
	testkit.Succeeds(b, 5*time.Second, func() error {
		_, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(e.addr))
		return err
	}, "no X509-SVID")
	b.SetParallelism(8) // 16 clients on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if _, err := c.FetchX509SVID(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestConfigSVIDs: SVIDs from the agent's own config are served to the
// workloads their rules match, next to workload identities.
func TestConfigSVIDs(t *testing.T) {
	mine, other := uid, "4294967294"
	e := start(t, func(c *agent.Config) {
		c.SVIDs = []agent.ConfigSVID{
			{Path: "/config/{{ workload.unix.uid }}", Hint: "config", Rules: []resource.WorkloadRule{eq("workload.unix.uid", mine)}},
			{Path: "/config/other", Rules: []resource.WorkloadRule{eq("workload.unix.uid", other)}},
		}
	})
	ctx := ctxT(t, 20*time.Second)
	resp, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) != 1 || resp[0].ID.String() != "spiffe://example.org/config/"+uid || resp[0].Hint != "config" {
		t.Fatalf("config SVIDs served: %v", resp)
	}
}

// TestMisbehavingClientsDoNotHurtOthers: garbage on the socket, a client
// that opens streams and drops them, and a flood of calls leave a
// well-behaved client served.
func TestMisbehavingClientsDoNotHurtOthers(t *testing.T) {
	e := start(t)
	ctx := ctxT(t, 30*time.Second)
	good := servedClient(t, ctx, e)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Garbage frames: not HTTP/2 at all, and a broken HTTP/2 preface.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.Dial("unix", e.socket)
			if err != nil {
				continue
			}
			if i%2 == 0 {
				c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			} else {
				c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x99\xff\xff\xff\xff\xff\xff"))
			}
			c.Close()
		}
	}()
	// Streams opened and dropped mid-way, as fast as possible.
	raw := rawClient(t, e)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sctx, cancel := context.WithCancel(withHeader(ctx))
			if s, err := raw.FetchX509SVID(sctx, &workload.X509SVIDRequest{}); err == nil {
				s.Recv()
			}
			cancel()
		}
	}()
	// Meanwhile the good client keeps being served, quickly.
	var worst time.Duration
	for i := 0; i < 50; i++ {
		t0 := time.Now()
		if _, err := good.FetchX509SVID(ctx); err != nil {
			t.Fatalf("a well-behaved client was refused while others misbehaved: %v", err)
		}
		worst = max(worst, time.Since(t0))
	}
	close(stop)
	wg.Wait()
	t.Logf("slowest of 50 fetches among misbehaving clients: %s", worst)
	if worst > 2*time.Second {
		t.Fatalf("a fetch took %s while others misbehaved", worst)
	}
}

// servedClient gives this process an identity and returns a well-behaved
// go-spiffe client once it is served its X509-SVID: the client whose
// service the misbehaving-client tests watch.
func servedClient(t *testing.T, ctx context.Context, e *env) *workloadapi.Client {
	t.Helper()
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid)))
	good, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { good.Close() })
	testkit.Succeeds(t, 5*time.Second, func() error {
		_, err := good.FetchX509SVID(ctx)
		return err
	}, "no X509-SVID for the good client")
	return good
}

// metric sums the samples of the agent's /metrics whose name and labels
// contain each of parts.
func metric(t *testing.T, e *env, parts ...string) float64 {
	t.Helper()
	total := 0.0
	for _, line := range strings.Split(get(t, "http://"+e.diag+"/metrics"), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") || !containsAll(line[:i], parts) {
			continue
		}
		var v float64
		fmt.Sscanf(line[i+1:], "%g", &v)
		total += v
	}
	return total
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// An SVID of a workload identity that is removed, or whose rules stop
// matching, leaves the agent's cache as soon as the state arrives: it is
// not renewed, retried or reported (a CA rotation would wait on it), while
// the SVIDs of the other identities stay.
func TestRemovedIdentityLeavesCache(t *testing.T) {
	e := start(t)
	e.create(t, identity("me", "/uid/{{ workload.unix.uid }}", "me", eq("workload.unix.uid", uid)),
		identity("web", "/svc/web", "web", eq("workload.unix.uid", uid)),
		identity("db", "/svc/db", "db", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	resp, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.SVIDs) != 3 {
		t.Fatalf("fetched %d SVIDs, want 3", len(resp.SVIDs))
	}
	cached := []string{`wid_agent_cached_svids{type="x509"}`}
	issued := []string{"wid_agent_auth_rpcs_total{", "IssueWorkloadSVIDs"}
	waitCached := func(want float64) {
		t.Helper()
		testkit.Eventually(t, 5*time.Second, func() bool { return metric(t, e, cached...) == want },
			"the agent does not cache %v X509-SVIDs", want)
	}
	waitCached(3)
	calls := metric(t, e, issued...)

	e.remove(t, "me")
	waitCached(2)
	// The rules of db no longer match this uid.
	db := identity("db", "/svc/db", "db", eq("workload.unix.uid", uid+"0"))
	doc, err := resource.MarshalJSON(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}, Force: true}); err != nil {
		t.Fatal(err)
	}
	waitCached(1)
	// A change that keeps the SVID (a new label) keeps it cached.
	web := identity("web", "/svc/web", "web", eq("workload.unix.uid", uid))
	web.Metadata.Labels = map[string]string{"team": "a"}
	if doc, err = resource.MarshalJSON(web); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}, Force: true}); err != nil {
		t.Fatal(err)
	}
	resp, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.SVIDs) != 1 || resp.SVIDs[0].ID.Path() != "/svc/web" {
		t.Fatalf("after the changes the workload gets %v, want only /svc/web", resp.SVIDs)
	}
	waitCached(1)
	if got := metric(t, e, issued...); got != calls {
		t.Errorf("the agent called IssueWorkloadSVIDs %v times after the removals: it asked for SVIDs nobody may have", got-calls)
	}
}

// A role change that stops selecting identities removes them from the agent
// at once (a delta naming them), and their SVIDs leave the cache; a role
// change that selects them again brings them back.
func TestRoleChangeRemovesIdentitiesFromAgent(t *testing.T) {
	e := start(t)
	web := identity("web", "/svc/web", "web", eq("workload.unix.uid", uid))
	web.Metadata.Labels = map[string]string{"env": "prod"}
	e.create(t, web, identity("db", "/svc/db", "db", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	waitSVIDs := func(want ...string) {
		t.Helper()
		var got []string
		testkit.Succeeds(t, 5*time.Second, func() error {
			resp, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(e.addr))
			if err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, s := range resp.SVIDs {
				got = append(got, s.ID.Path())
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("the workload gets %v", got)
			}
			return nil
		}, "the workload does not get %v", want)
	}
	waitSVIDs("/svc/db", "/svc/web")

	setLabels := func(labels map[string][]string) {
		t.Helper()
		got, err := e.admin.GetResource(ctx, &authv1.GetResourceRequest{Kind: resource.KindRole, Name: "local-agent"})
		if err != nil {
			t.Fatal(err)
		}
		v, err := resource.UnmarshalStored(got.Resource)
		if err != nil {
			t.Fatal(err)
		}
		role := v.(*resource.Role)
		role.Spec.Allow.WorkloadIdentityLabels = labels
		doc, err := resource.MarshalJSON(role)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin.UpdateResource(ctx, &authv1.UpdateResourceRequest{Resource: doc}); err != nil {
			t.Fatal(err)
		}
	}
	setLabels(map[string][]string{"env": {"prod"}})
	waitSVIDs("/svc/web")
	setLabels(map[string][]string{"*": {"*"}})
	waitSVIDs("/svc/db", "/svc/web")
}

// A stopped agent leaves no socket behind, its own nor an extra one: a
// socket file without a server makes the next start, or a workload, find a
// dead endpoint.
func TestStopRemovesSockets(t *testing.T) {
	var extra string
	e := start(t, func(c *agent.Config) {
		extra = filepath.Join(filepath.Dir(c.SocketPath), "extra.sock")
		c.ExtraWorkloadAPIs = []agent.WorkloadAPIConfig{{Listen: extra}}
	})
	for _, p := range []string{e.socket, extra} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("while the agent runs, %s is not a socket: %v", p, err)
		}
	}
	e.cancel()
	err := <-e.done
	e.done <- err // for the cleanup, which waits on it too
	if err != nil {
		t.Fatalf("agent stopped with: %v", err)
	}
	for _, p := range []string{e.socket, extra} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after the agent stopped, %s is still there (stat: %v)", p, err)
		}
	}
}
