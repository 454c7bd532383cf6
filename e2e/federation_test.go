package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/testkit"
)

// federatedDomain is one wid trust domain of a federation test: its
// process, its bundle endpoint and a workload identity of the test's uid.
type federatedDomain struct {
	*agent
	endpoint string
	peer     spiffeid.ID
}

// startFederatedDomain starts trust domain td with a bundle endpoint whose
// refresh hint is 1s.
func startFederatedDomain(t *testing.T, td string, extra ...string) *federatedDomain {
	t.Helper()
	addr := testkit.ClosedAddr(t)
	args := append([]string{"--trust-domain", td, "--no-dev-identity", "--bundle-endpoint-listen", addr, "--bundle-refresh-hint", "1s"}, extra...)
	a := startAgent(t, newDataDir(t), args...)
	return &federatedDomain{agent: a, endpoint: "https://" + addr + "/", peer: spiffeid.RequireFromString("spiffe://" + td + "/svc/peer")}
}

// federate makes from trust to, over https_spiffe, starting from the
// bundle to exports.
func federate(t *testing.T, from, to *federatedDomain) {
	t.Helper()
	bundle := to.widctl("bundle", "export", "--format", "spiffe").must(t).stdout
	file := filepath.Join(t.TempDir(), to.td+".json")
	if err := os.WriteFile(file, []byte(bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	from.widctl("federation", "create", to.td, "--url", to.endpoint, "--profile", "https_spiffe", "--bundle", file).must(t)
}

// federationStatus is what widctl federation ls --format json says of td.
type federationStatus struct {
	Metadata struct{ Name string }
	Status   *struct {
		LastRefresh time.Time `json:"last_refresh"`
		Sequence    uint64
		Error       string
	}
}

func federations(t *testing.T, a *agent) map[string]federationStatus {
	t.Helper()
	r := a.widctl("federation", "ls", "--format", "json").must(t)
	var list []federationStatus
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("federation ls --format json: %v\n%s", err, r.stdout)
	}
	out := map[string]federationStatus{}
	for _, f := range list {
		out[f.Metadata.Name] = f
	}
	return out
}

// waitFederated waits until src holds td's bundle.
func waitFederated(t *testing.T, src *workloadapi.X509Source, td spiffeid.TrustDomain) {
	t.Helper()
	testkit.EventuallyEvery(t, 20*time.Second, 50*time.Millisecond, func() bool {
		_, err := src.GetX509BundleForTrustDomain(td)
		return err == nil
	}, "the workload never got the bundle of %s", td)
}

func x509Source(t *testing.T, socket string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		t.Fatalf("X509 source on %s: %v", socket, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// twoDomains starts example.org and partner.test federated both ways, each
// with a workload identity for this test's processes that federates with
// the other, and returns the X509 sources of a workload of each.
func twoDomains(t *testing.T) (org, partner *federatedDomain, orgSrc, partnerSrc *workloadapi.X509Source) {
	org = startFederatedDomain(t, "example.org")
	partner = startFederatedDomain(t, "partner.test")
	federate(t, org, partner)
	federate(t, partner, org)
	uid := fmt.Sprint(os.Getuid())
	org.widctl("wi", "create", "peer", "--spiffe-id", "/svc/peer", "--rule", "workload.unix.uid="+uid, "--federates-with", "partner.test").must(t)
	partner.widctl("wi", "create", "peer", "--spiffe-id", "/svc/peer", "--rule", "workload.unix.uid="+uid, "--federates-with", "example.org").must(t)
	orgSrc, partnerSrc = x509Source(t, org.workload), x509Source(t, partner.workload)
	waitFederated(t, orgSrc, partner.peer.TrustDomain())
	waitFederated(t, partnerSrc, org.peer.TrustDomain())
	return org, partner, orgSrc, partnerSrc
}

// mtlsServer serves spiffetls mTLS as partner's workload, accepting only
// client, and echoes a line.
func mtlsServer(t *testing.T, src *workloadapi.X509Source, client spiffeid.ID) string {
	t.Helper()
	lis, err := spiffetls.ListenWithMode(context.Background(), "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(client), src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// mtlsOnce dials addr as a workload of src, authorizing server, and checks the echo.
func mtlsOnce(ctx context.Context, addr string, src *workloadapi.X509Source, server spiffeid.ID) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(server), src))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "hello" {
		return fmt.Errorf("echo %q", buf)
	}
	return nil
}

func TestFederationTwoWidDomainsMTLS(t *testing.T) {
	org, partner, orgSrc, partnerSrc := twoDomains(t)
	addr := mtlsServer(t, partnerSrc, org.peer)
	if err := mtlsOnce(context.Background(), addr, orgSrc, partner.peer); err != nil {
		t.Fatalf("mTLS from %s to %s: %v", org.peer, partner.peer, err)
	}
	// The server authorizes the exact SPIFFE ID: another ID of the
	// federated trust domain is refused.
	strict := mtlsServer(t, partnerSrc, spiffeid.RequireFromString("spiffe://example.org/svc/other"))
	if err := mtlsOnce(context.Background(), strict, orgSrc, partner.peer); err == nil {
		t.Fatal("a server authorizing spiffe://example.org/svc/other accepted spiffe://example.org/svc/peer")
	}
	// And the way back: example.org's workload serves partner.test's.
	back := mtlsServer(t, orgSrc, partner.peer)
	if err := mtlsOnce(context.Background(), back, partnerSrc, org.peer); err != nil {
		t.Fatalf("mTLS from %s to %s: %v", partner.peer, org.peer, err)
	}

	// The JWT bundle of the federated trust domain reaches workloads too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	jb, err := workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr("unix://"+org.workload))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jb.GetJWTBundleForTrustDomain(partner.peer.TrustDomain()); err != nil {
		t.Errorf("FetchJWTBundles of example.org's workload has no bundle of partner.test: %v", err)
	}

	st := federations(t, org.agent)["partner.test"]
	if st.Status == nil || st.Status.LastRefresh.IsZero() || st.Status.Sequence == 0 || st.Status.Error != "" {
		t.Errorf("federation ls of partner.test: %+v", st.Status)
	}
	// partner.test's endpoint goes away: the refresh fails, says why in
	// federation ls and the audit log, and the last good bundle is kept.
	partner.stop()
	testkit.EventuallyEvery(t, 20*time.Second, 100*time.Millisecond, func() bool {
		st := federations(t, org.agent)["partner.test"]
		return st.Status != nil && st.Status.Error != ""
	}, "federation ls never showed the failed refresh")
	if st := federations(t, org.agent)["partner.test"]; !strings.Contains(st.Status.Error, "connection refused") || st.Status.Sequence == 0 {
		t.Errorf("federation ls after the endpoint stopped: %+v", st.Status)
	}
	if r := org.widctl("audit", "ls", "--type", "federation.bundle.refresh_failed", "--format", "json").must(t); !strings.Contains(r.stdout, "connection refused") {
		t.Errorf("no refresh_failed event with its reason:\n%s", r.stdout)
	}
	if r := org.widctl("audit", "ls", "--type", "federation.bundle.refreshed", "--format", "json").must(t); !strings.Contains(r.stdout, "partner.test") {
		t.Errorf("no refreshed event for partner.test:\n%s", r.stdout)
	}
	if err := mtlsOnce(context.Background(), addr, orgSrc, partner.peer); err != nil {
		t.Fatalf("mTLS to partner.test failed once its endpoint stopped (the last good bundle must be kept): %v", err)
	}

	// Federating with itself is refused, saying why.
	r := org.widctl("federation", "create", "example.org", "--url", partner.endpoint, "--profile", "https_web")
	if r.code == 0 || !strings.Contains(r.stderr, "is this trust domain") {
		t.Errorf("federating with itself: exit %d, %s", r.code, r.stderr)
	}
	// Removing the federation takes the bundle away from the workloads.
	org.widctl("federation", "rm", "partner.test").must(t)
	testkit.EventuallyEvery(t, 10*time.Second, 50*time.Millisecond, func() bool {
		_, err := orgSrc.GetX509BundleForTrustDomain(partner.peer.TrustDomain())
		return err != nil
	}, "the workload kept partner.test's bundle after the federation was removed")
	if err := mtlsOnce(context.Background(), addr, orgSrc, partner.peer); err == nil {
		t.Error("mTLS to partner.test succeeded after the federation was removed")
	}
}

// waitBundleSeen waits until the workload of src, in trust domain of
// watcher, holds the bundle that from serves now.
func waitBundleSeen(t *testing.T, from, watcher *federatedDomain, src *workloadapi.X509Source) {
	t.Helper()
	td := from.peer.TrustDomain()
	want, err := spiffebundle.Parse(td, []byte(from.widctl("bundle", "export", "--format", "spiffe").must(t).stdout))
	if err != nil {
		t.Fatal(err)
	}
	wantBundle := x509bundle.FromX509Authorities(td, want.X509Authorities())
	if !testkit.WithinEvery(20*time.Second, 50*time.Millisecond, func() bool {
		b, err := src.GetX509BundleForTrustDomain(td)
		return err == nil && b.Equal(wantBundle)
	}) {
		// The status is read only now, when it explains the failure.
		t.Fatalf("the workload of %s never got the bundle %s serves now (%+v)", watcher.td, from.td, federations(t, watcher.agent)[from.td].Status)
	}
}

// A full CA rotation in partner.test while workloads of both trust domains
// do mTLS every 50 ms: no handshake fails on either side.
func TestFederationRotationNoHandshakeFails(t *testing.T) {
	org, partner, orgSrc, partnerSrc := twoDomains(t)
	toPartner := mtlsServer(t, partnerSrc, org.peer)
	toOrg := mtlsServer(t, orgSrc, partner.peer)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	loop := func(addr string, src *workloadapi.X509Source, server spiffeid.ID) {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := mtlsOnce(ctx, addr, src, server); err != nil {
				if ctx.Err() != nil {
					return
				}
				failed.Add(1)
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				continue
			}
			ok.Add(1)
		}
	}
	wg.Add(2)
	go loop(toPartner, orgSrc, partner.peer)
	go loop(toOrg, partnerSrc, org.peer)

	before := federations(t, org.agent)["partner.test"].Status.Sequence
	for _, phase := range []string{"init", "update_clients", "update_servers", "standby"} {
		rotateTo(t, partner.agent, "spiffe", phase)
		waitBundleSeen(t, partner, org, orgSrc)
	}
	cancel()
	wg.Wait()
	after := federations(t, org.agent)["partner.test"].Status
	t.Logf("%d handshakes, %d failed; partner.test's bundle went from sequence %d to %d", ok.Load()+failed.Load(), failed.Load(), before, after.Sequence)
	if failed.Load() > 0 {
		t.Fatalf("%d handshakes failed during the rotation; the first: %v", failed.Load(), firstErr)
	}
	if after.Sequence <= before {
		t.Errorf("example.org never saw partner.test's rotated bundle: sequence %d, then %d", before, after.Sequence)
	}
	if ok.Load() < 100 {
		t.Errorf("only %d handshakes ran", ok.Load())
	}
}

// webPKI is a test CA and a server certificate for 127.0.0.1 it signs,
// written where widagent --bundle-endpoint-cert and -key read them.
type webPKI struct {
	caFile, certFile, keyFile string
	ca                        *x509.Certificate
	caKey                     *ecdsa.PrivateKey
}

func newWebPKI(t *testing.T) *webPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e web CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &webPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server.key"), ca: ca, caKey: caKey}
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	p.issue(t, 2)
	return p
}

// issue writes a new server certificate with serial.
func (p *webPKI) issue(t *testing.T, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key first: the endpoint reads the pair when the certificate changes.
	if err := os.WriteFile(p.keyFile+".new", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.certFile+".new", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p.keyFile+".new", p.keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p.certFile+".new", p.certFile); err != nil {
		t.Fatal(err)
	}
}

func (p *webPKI) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// servedSerial is the serial of the certificate the endpoint at addr serves.
func (p *webPKI) servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatalf("TLS to the bundle endpoint: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// The https_web profile with an operator certificate, read again when it
// changes; OIDC discovery validated by go-oidc against the live endpoint;
// iss in JWT-SVIDs only when --jwt-issuer is given.
func TestFederationHTTPSWebAndOIDC(t *testing.T) {
	pki := newWebPKI(t)
	// The federating auth service trusts the test CA as a system root.
	t.Setenv("SSL_CERT_FILE", pki.caFile)
	addr := testkit.ClosedAddr(t)
	issuer := "https://" + addr
	web := startAgent(t, newDataDir(t), "--trust-domain", "oidc.test", "--bundle-endpoint-listen", addr,
		"--bundle-endpoint-cert", pki.certFile, "--bundle-endpoint-key", pki.keyFile, "--bundle-refresh-hint", "1s", "--jwt-issuer", issuer)
	org := startFederatedDomain(t, "example.org")

	// https_web federation: the endpoint is authenticated by its web certificate.
	org.widctl("federation", "create", "oidc.test", "--url", "https://"+addr+"/", "--profile", "https_web").must(t)
	uid := fmt.Sprint(os.Getuid())
	org.widctl("wi", "create", "peer", "--spiffe-id", "/svc/peer", "--rule", "workload.unix.uid="+uid, "--federates-with", "oidc.test").must(t)
	waitFederated(t, x509Source(t, org.workload), spiffeid.RequireTrustDomainFromString("oidc.test"))

	// OIDC discovery, checked by a relying party that knows nothing of SPIFFE.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "relying-party"}, workloadapi.WithAddr("unix://"+web.workload))
	if err != nil {
		t.Fatal(err)
	}
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, pki.client()), issuer)
	if err != nil {
		t.Fatalf("OIDC discovery of %s: %v", issuer, err)
	}
	tok, err := provider.Verifier(&oidc.Config{ClientID: "relying-party"}).Verify(oidc.ClientContext(ctx, pki.client()), svid.Marshal())
	if err != nil {
		t.Fatalf("go-oidc refused the JWT-SVID: %v", err)
	}
	if tok.Subject != svid.ID.String() || tok.Issuer != issuer {
		t.Errorf("verified token: sub %q iss %q, want %q and %q", tok.Subject, tok.Issuer, svid.ID, issuer)
	}
	if _, err := provider.Verifier(&oidc.Config{ClientID: "someone-else"}).Verify(oidc.ClientContext(ctx, pki.client()), svid.Marshal()); err == nil {
		t.Error("go-oidc accepted the JWT-SVID for another audience")
	}
	// Without --jwt-issuer, no iss.
	plain, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "relying-party"}, workloadapi.WithAddr("unix://"+org.workload))
	if err != nil {
		t.Fatal(err)
	}
	if iss, ok := plain.Claims["iss"]; ok {
		t.Errorf("a JWT-SVID of a trust domain without --jwt-issuer has iss %v", iss)
	}
	if svid.Claims["iss"] != issuer {
		t.Errorf("a JWT-SVID of oidc.test has iss %v, want %s", svid.Claims["iss"], issuer)
	}

	// A new certificate in the files is served without a restart.
	if got := pki.servedSerial(t, addr); got != 2 {
		t.Fatalf("the endpoint serves certificate %d, want 2", got)
	}
	pki.issue(t, 3)
	testkit.EventuallyEvery(t, 10*time.Second, 100*time.Millisecond, func() bool { return pki.servedSerial(t, addr) == 3 },
		"the endpoint never served the new certificate")
	st := federations(t, org.agent)["oidc.test"]
	if st.Status == nil || st.Status.Error != "" || st.Status.LastRefresh.IsZero() {
		t.Errorf("federation ls of oidc.test: %+v", st.Status)
	}
}
