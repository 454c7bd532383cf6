package agent_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agent"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeProcSelf is a proc root holding this process as the kernel shows it,
// but with the cgroup of a container in a Kubernetes pod.
func fakeProcSelf(t *testing.T, cgroup string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"stat", "status"} {
		b, err := os.ReadFile("/proc/self/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("..", "attest", "testdata", "cgroup", cgroup))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// kubeletStandIn serves the attest package's pod list fixture on the
// kubelet's secure port, with a bearer token; up reports whether it answers.
func kubeletStandIn(t *testing.T) (srv *httptest.Server, caFile, tokenFile string, up *atomic.Bool) {
	t.Helper()
	pods, err := os.ReadFile(filepath.Join("..", "attest", "testdata", "kubelet", "pods.json"))
	if err != nil {
		t.Fatal(err)
	}
	up = &atomic.Bool{}
	up.Store(true)
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pods" || r.Header.Get("Authorization") != "Bearer node-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if !up.Load() {
			http.Error(w, "kubelet is shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(pods)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile, tokenFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("node-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile, tokenFile, up
}

// A workload identity templated on the pod's namespace and service account
// issues /ns/<namespace>/sa/<service account> to a process in that pod, and
// the attestation is audited with the pod's attributes. With the kubelet
// down, the same process still gets its unix-based identity and the record
// says why the kubernetes attributes are missing.
func TestKubernetesWorkloadIdentity(t *testing.T) {
	kubelet, caFile, tokenFile, up := kubeletStandIn(t)
	e := start(t, func(c *agent.Config) {
		c.Attestors = agent.AttestorsConfig{
			ProcRoot: fakeProcSelf(t, "containerd-systemd-v2.txt"),
			Kubernetes: agent.KubernetesAttestorConfig{
				Enabled: true, KubeletURL: kubelet.URL, CAFile: caFile, TokenFile: tokenFile,
				CacheTTL: time.Nanosecond,
			},
		}
	})
	e.create(t,
		identity("k8s", "/ns/{{ workload.kubernetes.namespace }}/sa/{{ workload.kubernetes.service_account }}", "k8s",
			eq("workload.kubernetes.namespace", "shop")),
		identity("by-uid", "/uid/{{ workload.unix.uid }}", "uid", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	td := spiffeid.RequireTrustDomainFromString("example.org")

	c, err := workloadapi.New(ctx, workloadapi.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	got := map[string]*x509svid.SVID{}
	for _, s := range resp.SVIDs {
		got[s.ID.String()] = s
	}
	want := spiffeid.RequireFromPath(td, "/ns/shop/sa/web")
	s, ok := got[want.String()]
	if !ok || len(got) != 2 {
		t.Fatalf("SVIDs %v, want %s and the uid one", keys(got), want)
	}
	if _, _, err := x509svid.Verify(s.Certificates, resp.Bundles); err != nil {
		t.Fatalf("%s does not verify: %v", want, err)
	}

	ev := waitAttestation(t, e, func(ev *authv1.AuditEvent) bool {
		return ev.Attributes["workload.kubernetes.pod_name"] == "web-7c9d8f6b5d-x2kqz"
	})
	for k, v := range map[string]string{
		"workload.kubernetes.service_account":               "web",
		"workload.kubernetes.pod_uid":                       "2c48913c-b29f-11e7-9350-020968147796",
		"workload.kubernetes.container_name":                "web",
		"workload.kubernetes.container_image":               "ghcr.io/example/web:1.4.2",
		"workload.kubernetes.labels.app.kubernetes.io.name": "web",
		"workload.unix.uid":                                 uid,
	} {
		if ev.Attributes[k] != v {
			t.Errorf("audited %s = %q, want %q", k, ev.Attributes[k], v)
		}
	}
	if ev.Reason != "" {
		t.Errorf("reason %q for an attestation where every attestor answered", ev.Reason)
	}

	// The kubelet goes down: the uid identity only, and the reason why.
	up.Store(false)
	raw := rawClient(t, e)
	stream, err := raw.FetchX509SVID(withHeader(ctx), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("with the kubelet down: %v, want the unix-based SVID", err)
	}
	if len(msg.Svids) != 1 || msg.Svids[0].SpiffeId != spiffeid.RequireFromPath(td, "/uid/"+uid).String() {
		t.Fatalf("with the kubelet down got %d SVIDs (%v), want only the uid one", len(msg.Svids), msg.Svids)
	}
	ev = waitAttestation(t, e, func(ev *authv1.AuditEvent) bool {
		return strings.Contains(ev.Reason, "kubernetes attestor")
	})
	if !strings.Contains(ev.Reason, "kubernetes attestor: the kubelet at "+kubelet.URL+"/pods answered 503 Service Unavailable") {
		t.Errorf("reason = %q, want the kubelet's answer", ev.Reason)
	}
	if _, ok := ev.Attributes["workload.kubernetes.namespace"]; ok || ev.Attributes["workload.unix.uid"] != uid {
		t.Errorf("attributes with the kubelet down = %v", ev.Attributes)
	}

	// Without the uid identity the caller is refused; the audit says that
	// the kubelet is why, the caller only that it matches nothing.
	e.remove(t, "by-uid")
	var last error
	for {
		// Until the removal reaches the agent, the agent may still ask for
		// the removed identity and pass on the auth service's refusal:
		// only the agent's own refusal ends the wait.
		_, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"x"}})
		if msg := status.Convert(err).Message(); status.Code(err) == codes.PermissionDenied && !strings.Contains(msg, "does not exist") {
			if !strings.HasPrefix(msg, "no identity issued: this process matches no workload identity") || strings.Contains(msg, "kubelet") {
				t.Fatalf("refusal = %q, want no more than that the process matches no workload identity", msg)
			}
			break
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("the uid identity's removal never reached the agent; last answer: %v", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
	ev = waitAttestation(t, e, func(ev *authv1.AuditEvent) bool {
		return ev.Outcome == "denied" && strings.Contains(ev.Reason, "kubernetes attestor")
	})
	if !strings.HasPrefix(ev.Reason, "kubernetes attestor: the kubelet at "+kubelet.URL+"/pods answered 503 Service Unavailable; ") ||
		!strings.Contains(ev.Reason, "workload.kubernetes.namespace") {
		t.Fatalf("audited reason = %q, want the kubelet's failure first, then the condition", ev.Reason)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// waitAttestation waits for a workload.attest event that match accepts.
func waitAttestation(t *testing.T, e *env, match func(*authv1.AuditEvent) bool) *authv1.AuditEvent {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	for {
		resp, err := e.admin.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Types: []string{"workload.attest"}}})
		if err != nil {
			t.Fatalf("no matching workload.attest event: %v", err)
		}
		for _, ev := range resp.Events {
			if match(ev) {
				return ev
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no matching workload.attest event among %d", len(resp.Events))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestAttestorsConfigRefused(t *testing.T) {
	off := false
	for _, tt := range []struct {
		cfg     agent.AttestorsConfig
		wantErr string
	}{
		{agent.AttestorsConfig{Unix: agent.UnixAttestorConfig{Enabled: &off}}, "every attestor is off"},
		{agent.AttestorsConfig{Kubernetes: agent.KubernetesAttestorConfig{Enabled: true, KubeletURL: "10.0.0.1"}}, "attestors.kubernetes: kubelet_url \"10.0.0.1\" is not an http:// or https:// URL"},
		{agent.AttestorsConfig{Docker: agent.DockerAttestorConfig{Enabled: true, APIVersion: "latest"}}, "attestors.docker: docker api_version \"latest\""},
		{agent.AttestorsConfig{Timeout: -time.Second}, "attestors.timeout must not be negative"},
	} {
		_, err := agent.New(agent.Config{SocketPath: "/tmp/x.sock", AuthAddr: "127.0.0.1:1", DataDir: t.TempDir(), Attestors: tt.cfg})
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("New(%+v) = %v, want %q", tt.cfg, err, tt.wantErr)
		}
	}
}
