package svid_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/root"
	"github.com/wid-project/wid/internal/cli/svid"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/testkit"
)

// widctl is the shared in-process runner, with this package's helpers.
type widctl struct{ clitest.Widctl }

func newWidctl(t *testing.T, srv *authtest.Server) widctl {
	return widctl{clitest.Widctl{T: t, Srv: srv, Main: root.Run}}
}

func start(t *testing.T) widctl {
	t.Helper()
	return widctl{clitest.StartWidctl(t, root.Run)}
}

func (w widctl) jwtBundle() *jwtbundle.Bundle {
	w.T.Helper()
	resp, err := w.Srv.AdminClient(w.T).GetBundle(context.Background(), &authv1.GetBundleRequest{})
	if err != nil {
		w.T.Fatal(err)
	}
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(w.Srv.TrustDomain), resp.GetJwks())
	if err != nil {
		w.T.Fatal(err)
	}
	return b.JWTBundle()
}

// The X509-SVID on disk is one a relying party accepts: it verifies with
// go-spiffe against the bundle.pem written next to it, carries the SANs
// asked for and its key, and the key file is private.
func TestIssueX509Verifies(t *testing.T) {
	for _, keyType := range []string{"p256", "rsa2048", "ed25519"} {
		t.Run(keyType, func(t *testing.T) {
			w := start(t)
			// The admin's editor role grants every path but no SANs.
			w.OK("role", "update", "editor", "--dns-san", "*.example.com", "--ip-san", "10.0.0.0/8")
			dir := filepath.Join(t.TempDir(), "out")
			out := w.OK("svid", "issue", "/team/alice/laptop", "--ttl", "30m", "--dns-san", "laptop.example.com", "--ip-san", "10.1.2.3",
				"--key-type", keyType, "--output", dir)

			if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
				t.Fatalf("output dir: %v, mode %v, want 0700", err, st.Mode().Perm())
			}
			st, err := os.Stat(filepath.Join(dir, svid.FileKey))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("svid.key: %v, mode %v, want 0600", err, st.Mode().Perm())
			}
			s, err := x509svid.Load(filepath.Join(dir, svid.FileCert), filepath.Join(dir, svid.FileKey))
			if err != nil {
				t.Fatalf("svid.pem and svid.key do not make an X509-SVID: %v", err)
			}
			b, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString(w.Srv.TrustDomain), filepath.Join(dir, svid.FileBundle))
			if err != nil {
				t.Fatal(err)
			}
			id, _, err := x509svid.Verify(s.Certificates, b)
			if err != nil {
				t.Fatalf("the SVID does not verify against bundle.pem: %v", err)
			}
			if want := "spiffe://" + w.Srv.TrustDomain + "/team/alice/laptop"; id.String() != want {
				t.Errorf("ID = %s, want %s", id, want)
			}
			leaf := s.Certificates[0]
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "laptop.example.com" || len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "10.1.2.3" {
				t.Errorf("SANs = %v %v", leaf.DNSNames, leaf.IPAddresses)
			}
			if life := time.Until(leaf.NotAfter); life > 31*time.Minute || life < 25*time.Minute {
				t.Errorf("the SVID lives %v more, want about 30m", life)
			}
			for _, want := range []string{"spiffe://example.org/team/alice/laptop", "X509-SVID", leaf.SerialNumber.Text(16), filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"), filepath.Join(dir, "bundle.pem")} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}

			// inspect agrees.
			got := w.OK("svid", "inspect", filepath.Join(dir, svid.FileCert))
			if !strings.Contains(got, "spiffe://example.org/team/alice/laptop") || !strings.Contains(got, "verified against the bundle of example.org") || !strings.Contains(got, "laptop.example.com") {
				t.Errorf("inspect:\n%s", got)
			}
		})
	}
}

// Without --overwrite an existing file stops everything before the auth
// service is asked: every file is as it was, and no file is added.
func TestIssueRefusesToOverwrite(t *testing.T) {
	w := start(t)
	dir := t.TempDir()
	old := []byte("old bundle\n")
	if err := os.WriteFile(filepath.Join(dir, svid.FileBundle), old, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := w.Run("svid", "issue", "/x", "--output", dir)
	if code != cmdutil.ExitBadInput || out != "" || !strings.Contains(errOut, "bundle.pem already exists in "+dir+": pass --overwrite") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the old bundle.pem", len(entries))
	}
	if got, _ := os.ReadFile(filepath.Join(dir, svid.FileBundle)); string(got) != string(old) {
		t.Errorf("bundle.pem changed to %q", got)
	}

	w.OK("svid", "issue", "/x", "--output", dir, "--overwrite")
	if got, _ := os.ReadFile(filepath.Join(dir, svid.FileBundle)); !strings.HasPrefix(string(got), "-----BEGIN CERTIFICATE-----") {
		t.Errorf("with --overwrite bundle.pem is %q", got)
	}
}

// A JWT-SVID from issue passes go-spiffe's validation with the trust
// domain's JWKS; with --output - stdout is the token and nothing else.
func TestIssueJWT(t *testing.T) {
	w := start(t)
	jwks := w.jwtBundle()

	out := w.OK("svid", "issue", "/team/alice/cli", "--type", "jwt", "--audience", "api", "--output", "-")
	token := strings.TrimSuffix(out, "\n")
	if strings.ContainsAny(token, " \n") || strings.Count(token, ".") != 2 {
		t.Fatalf("stdout is not just a token: %q", out)
	}
	s, err := jwtsvid.ParseAndValidate(token, jwks, []string{"api"})
	if err != nil {
		t.Fatalf("the token does not validate with the JWKS: %v", err)
	}
	if s.ID.String() != "spiffe://example.org/team/alice/cli" {
		t.Errorf("sub = %s", s.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(token, jwks, []string{"other"}); err == nil {
		t.Error("the token validates for an audience it was not issued for")
	}

	dir := t.TempDir()
	var res svid.IssueResult
	if err := json.Unmarshal([]byte(w.OK("svid", "issue", "/team/alice/cli", "--type", "jwt", "--audience", "api,db", "-o", dir, "--ttl", "5m", "--format", "json")), &res); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, svid.FileToken)
	if res.Type != "jwt" || res.JTI == "" || res.Token != "" || len(res.Files) != 1 || res.Files[0] != path {
		t.Errorf("result = %+v", res)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("svid.token: %v, mode %v, want 0600", err, st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if _, err := jwtsvid.ParseAndValidate(strings.TrimSpace(string(data)), jwks, []string{"db"}); err != nil {
		t.Errorf("svid.token does not validate: %v", err)
	}

	var in svid.Inspection
	if err := json.Unmarshal([]byte(w.OK("svid", "inspect", path, "--format", "json")), &in); err != nil {
		t.Fatal(err)
	}
	if !in.Verified || in.SPIFFEID != "spiffe://example.org/team/alice/cli" || in.JTI != res.JTI || in.IssuerKey == "" || in.IssuerKeyID == "" {
		t.Errorf("inspection = %+v", in)
	}
	// From stdin, and with an audience it was not meant for.
	code, out, errOut := w.RunIn(token, "svid", "inspect", "-", "--audience", "nope")
	if code != cmdutil.ExitError || !strings.Contains(out, "NOT verified: expected audience") || errOut != "" {
		t.Errorf("wrong audience: exit %d, %q %q", code, out, errOut)
	}
}

// An SVID from another trust domain is decoded, shown and refused.
func TestInspectForeignSVID(t *testing.T) {
	w := start(t)
	other := newWidctl(t, authtest.Start(t, authtest.WithTrustDomain("other.org")))
	dir := t.TempDir()
	other.OK("svid", "issue", "/svc/x", "-o", dir)
	code, out, _ := w.Run("svid", "inspect", filepath.Join(dir, svid.FileCert))
	if code != cmdutil.ExitError || !strings.Contains(out, "spiffe://other.org/svc/x") || !strings.Contains(out, "NOT verified") {
		t.Errorf("exit %d:\n%s", code, out)
	}

	token := other.OK("svid", "issue", "/svc/x", "--type", "jwt", "--audience", "api", "-o", "-")
	code, out, _ = w.RunIn(token, "svid", "inspect", "-")
	if code != cmdutil.ExitError || !strings.Contains(out, "spiffe://other.org/svc/x") || !strings.Contains(out, `NOT verified: no bundle found for trust domain "other.org"`) {
		t.Errorf("foreign JWT-SVID: exit %d:\n%s", code, out)
	}
}

// What the auth service refuses reaches the user as its sentence, with a
// non-zero exit, and leaves no file behind.
func TestIssueRefusals(t *testing.T) {
	w := start(t)
	// The admin socket's identity holds the editor role; narrow it.
	w.OK("role", "update", "editor", "--deny-path", "/team/bob/**", "--max-ttl", "4h")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"path denied", []string{"/team/bob/x"}, cmdutil.ExitAuth, `role "editor" denies /team/bob/x`},
		{"TTL over the max", []string{"/team/alice/x", "--ttl", "5h"}, cmdutil.ExitAuth, "4h"},
		{"SAN not granted", []string{"/team/alice/x", "--dns-san", "x.evil.example"}, cmdutil.ExitAuth, `DNS SAN "x.evil.example" is not granted for /team/alice/x`},
		{"jwt TTL over the max", []string{"/team/alice/x", "--type", "jwt", "--audience", "api", "--ttl", "5h"}, cmdutil.ExitAuth, "4h"},
		{"foreign trust domain", []string{"spiffe://other.org/svc/x"}, cmdutil.ExitBadInput, `SPIFFE ID "spiffe://other.org/svc/x" is in trust domain "other.org", not in "example.org": write spiffe://example.org/PATH or just /PATH`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			code, out, errOut := w.Run(append(append([]string{"svid", "issue"}, tt.args...), "-o", dir)...)
			if code != tt.code || out != "" || !strings.HasPrefix(errOut, "error: ") || !strings.Contains(errOut, tt.want) || strings.Count(errOut, "\n") != 1 || strings.Contains(errOut, "rpc error") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tt.code, tt.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("the output dir was left behind: %v", err)
			}
		})
	}
}

// A person's SVID does what it is for: with go-spiffe's spiffetls it reaches
// a server that authorizes exactly that SPIFFE ID, and another SVID of the
// same trust domain does not.
func TestIssuedSVIDWorksForMTLS(t *testing.T) {
	w := start(t)
	td := spiffeid.RequireTrustDomainFromString(w.Srv.TrustDomain)
	load := func(path string) (*x509svid.SVID, *x509bundle.Bundle) {
		t.Helper()
		dir := t.TempDir()
		w.OK("svid", "issue", path, "-o", dir)
		s, err := x509svid.Load(filepath.Join(dir, svid.FileCert), filepath.Join(dir, svid.FileKey))
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.Load(td, filepath.Join(dir, svid.FileBundle))
		if err != nil {
			t.Fatal(err)
		}
		return s, b
	}
	serverSVID, bundle := load("/svc/server")
	alice, _ := load("/team/alice/laptop")
	bob, _ := load("/team/bob/laptop")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := testkit.GreeterMTLS(t, tlsconfig.AuthorizeID(alice.ID), serverSVID, bundle)
	call := func(s *x509svid.SVID) (string, error) {
		return testkit.Greet(ctx, addr, tlsconfig.AuthorizeID(serverSVID.ID), s, bundle)
	}
	got, err := call(alice)
	if want := "hello spiffe://example.org/team/alice/laptop, you said hi\n"; err != nil || got != want {
		t.Errorf("alice's SVID: %q, %v; want %q", got, err, want)
	}
	if got, err := call(bob); err == nil {
		t.Errorf("bob's SVID reached a server that authorizes only alice: %q", got)
	}
}

func TestIssueParsesFlags(t *testing.T) {
	f, _ := clitest.Factory(t)
	var got *svid.IssueOptions
	cmd := svid.NewCmdIssue(f, func(o *svid.IssueOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"/team/alice/laptop", "--ttl", "2h", "--dns-san", "a.example.com,b.example.com", "--ip-san", "10.1.2.3", "--ip-san", "fd00::1",
		"--key-type", "ED25519", "-o", "out", "--overwrite"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Path != "/team/alice/laptop" || got.TTL.D() != 2*time.Hour || got.Type != authv1.SVIDTypeX509 || got.KeyType != svid.KeyEd25519 ||
		got.Output != "out" || !got.Overwrite || strings.Join(got.DNSSANs, " ") != "a.example.com b.example.com" || strings.Join(got.IPSANs, " ") != "10.1.2.3 fd00::1" {
		t.Errorf("options = %+v", got)
	}

	cmd = svid.NewCmdIssue(f, func(o *svid.IssueOptions) error { got = o; return nil })
	cmd.SetArgs([]string{"spiffe://example.org/ci", "--type", "JWT", "--audience", "api,db", "--audience", "ci"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Type != authv1.SVIDTypeJWT || strings.Join(got.Audiences, " ") != "api db ci" || got.Output != "." {
		t.Errorf("options = %+v", got)
	}
}

// With --output - and --format json the token is in the JSON, and nothing
// is written.
func TestIssueJWTToStdoutAsJSON(t *testing.T) {
	w := start(t)
	dir := t.TempDir()
	t.Chdir(dir)
	var res svid.IssueResult
	if err := json.Unmarshal([]byte(w.OK("svid", "issue", "/ci", "--type", "jwt", "--audience", "api", "-o", "-", "--format", "json")), &res); err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(res.Token, w.jwtBundle(), []string{"api"}); err != nil || len(res.Files) != 0 {
		t.Errorf("result %+v: %v", res, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%d files written", len(entries))
	}
}

// A serial reads the same wherever it is printed: what svid issue says, what
// svid inspect says of the file it wrote, and the audit event of the
// issuance; and a serial whose top byte is zero keeps its leading zeros in
// inspect, as the auth service records it.
func TestSerialSameEverywhere(t *testing.T) {
	w := start(t)
	dir := t.TempDir()
	var issued svid.IssueResult
	if err := json.Unmarshal([]byte(w.OK("svid", "issue", "/svc/serial", "-o", dir, "--format", "json")), &issued); err != nil {
		t.Fatal(err)
	}
	var inspected svid.Inspection
	if err := json.Unmarshal([]byte(w.OK("svid", "inspect", filepath.Join(dir, svid.FileCert), "--format", "json")), &inspected); err != nil {
		t.Fatal(err)
	}
	var events []struct {
		Type   string `json:"type"`
		Serial string `json:"serial"`
	}
	if err := json.Unmarshal([]byte(w.OK("audit", "ls", "--type", "svid.x509.issued", "--format", "json")), &events); err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		t.Fatal("no svid.x509.issued event")
	}
	if len(issued.Serial) != 32 || issued.Serial != inspected.Serial || issued.Serial != events[len(events)-1].Serial {
		t.Fatalf("serials differ: issue %q, inspect %q, audit %q", issued.Serial, inspected.Serial, events[len(events)-1].Serial)
	}

	// One in 256 serials starts with a zero byte: make one.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := new(big.Int).SetString("dffe0102030405060708090a0b0c0d", 16)
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/svc/zero"}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "zero.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, out, _ := w.Run("svid", "inspect", file, "--format", "json")
	if err := json.Unmarshal([]byte(out), &inspected); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "00dffe0102030405060708090a0b0c0d"; inspected.Serial != want || ca.FormatSerial(serial) != want {
		t.Fatalf("inspect serial = %q, FormatSerial = %q, want %q", inspected.Serial, ca.FormatSerial(serial), want)
	}
}
