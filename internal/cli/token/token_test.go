package token

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/x509pop/x509poptest"
)

func TestCreateParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--bot", "web-agent", "--ttl", "15m", "--uses", "5"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Bot != "web-agent" || got.TTL != resource.Duration(15*time.Minute) || got.Uses != 5 {
		t.Errorf("options = %+v", got)
	}
	cmd = NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--bot", "web-agent"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Uses != 1 || got.TTL != 0 {
		t.Errorf("defaults = %+v, want one use and the server's default TTL", got)
	}
}

func TestJoinPrintsTheCommandToRun(t *testing.T) {
	doc := []byte(`{"kind":"token","version":"v1","metadata":{"name":"3f9a1c0b5d7e2a64"},"spec":{"bot":"web-agent","method":"token","uses":2,"used":0,"expires":"2026-01-01T13:00:00Z"}}`)
	ping := &authv1.PingResponse{AuthAddr: "auth.example.com:3025", CaPin: "sha256:abcd"}
	j, err := NewJoin(ping, "s3cr3t", doc)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	p := &output.Printer{Out: &buf, Format: output.Text}
	if err := j.Print(p, "Created bot web-agent with roles web."); err != nil {
		t.Fatal(err)
	}
	want := `Created bot web-agent with roles web.

Join token for bot web-agent (2 uses, expires 2026-01-01T13:00:00Z):
  s3cr3t
It is shown only this once.

To join, run on the agent's machine:
  WID_JOIN_TOKEN=s3cr3t widagent start --roles agent --auth auth.example.com:3025 --ca-pin sha256:abcd
(or keep the token in a file only the agent's user can read, and pass --join-token-file FILE)
`
	if buf.String() != want {
		t.Errorf("printed:\n%s\nwant:\n%s", buf.String(), want)
	}
	if got := JoinCommand("", "t", "sha256:x"); !strings.Contains(got, "--auth HOST:PORT") {
		t.Errorf("without an auth address: %q", got)
	}
}

func TestCreateParsesKubernetesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"--method", "kubernetes", "--name", "k8s-nodes", "--bot", "k8s-agent", "--allow", "wid:wid-agent,edge:*",
		"--issuer", "https://kubernetes.default.svc.cluster.local", "--cluster", "main"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	tok, err := got.kubernetesToken(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	k := tok.Spec.Kubernetes
	if tok.Metadata.Name != "k8s-nodes" || tok.Spec.Bot != "k8s-agent" || tok.Spec.Method != "kubernetes" || len(k.Allow) != 2 || k.Allow[1].ServiceAccount != "edge:*" ||
		k.Cluster != "main" || k.Issuer != "https://kubernetes.default.svc.cluster.local" || !tok.Spec.Expires.IsZero() || tok.Spec.Uses != 0 {
		t.Errorf("token = %+v, kubernetes = %+v", tok, k)
	}
}

// Both named methods (kubernetes, x509pop) share how --ttl and --name
// become the token, and how bad ones are refused.
func TestNamedTokensTTLAndName(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bundle, x509poptest.NewCA(t, "machines").PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 500, time.UTC)
	methods := map[string][]string{
		"kubernetes": {"--method", "kubernetes", "--bot", "b", "--allow", "wid:wid-agent", "--token-review"},
		"x509pop":    {"--method", "x509pop", "--bot", "b", "--ca-bundle", bundle},
	}
	for method, args := range methods {
		t.Run(method, func(t *testing.T) {
			parse := func(extra ...string) (*CreateOptions, error) {
				f, _ := clitest.Factory(t)
				var got *CreateOptions
				cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
				cmd.SetArgs(append(slices.Clone(args), extra...))
				cmd.SetOut(io.Discard)
				cmd.SetErr(io.Discard)
				return got, cmd.Execute()
			}
			o, err := parse("--name", "nodes", "--ttl", "48h")
			if err != nil {
				t.Fatal(err)
			}
			build := o.kubernetesToken
			if method == "x509pop" {
				build = o.x509PopToken
			}
			tok, err := build(now)
			if err != nil {
				t.Fatal(err)
			}
			if want := now.Add(48 * time.Hour).Truncate(time.Second); !tok.Spec.Expires.Equal(want) || tok.Spec.Method != method ||
				tok.Metadata.Name != "nodes" || tok.Spec.Bot != "b" {
				t.Errorf("token = %+v, want %s named nodes for bot b expiring %s", tok, method, want)
			}
			if _, err := parse("--name", "No Spaces"); err == nil || !strings.Contains(err.Error(), "--name: ") {
				t.Errorf("a bad --name: err = %v", err)
			}
			// The --ttl flag refuses a negative duration itself; options
			// set by other code are checked again.
			o.TTL = resource.Duration(-time.Hour)
			if err := o.check(); err == nil || !strings.Contains(err.Error(), "--ttl -1h is negative") {
				t.Errorf("a negative TTL: err = %v", err)
			}
		})
	}
}
