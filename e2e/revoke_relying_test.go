package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/wid-project/wid/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// parseCRLs parses every block of b as a CRL; a block that is not one, or
// bytes that are not PEM, fail: what a reader of a partial file would see.
func parseCRLs(b []byte) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(strings.TrimSpace(string(rest))) != 0 {
				return nil, fmt.Errorf("%d bytes are not PEM", len(rest))
			}
			break
		}
		if blk.Type != "X509 CRL" {
			return nil, fmt.Errorf("a %s block", blk.Type)
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRL in %d bytes", len(b))
	}
	return out, nil
}

func anyLists(crls []*x509.RevocationList, serial *big.Int) bool {
	for _, c := range crls {
		if lists(c, serial) {
			return true
		}
	}
	return false
}

// Done-when 2 (the relying parties' part): after svid revoke --spiffe-id,
// an SDS client following the trust domain's validation context is sent
// one whose CRL lists the old serial, and the file output's crl.pem is
// replaced (renamed into place: a reader looping over it never sees a
// partial file), stays 0600 and lists the serial.
func TestRevokeReachesSDSAndCRLFile(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	out := filepath.Join(dir, "out", "svid")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("outputs:\n  - type: x509\n    path: /svc/files\n    dir: %s\n", out)), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, dir, "--config", cfg)
	crlFile := filepath.Join(out, "crl.pem")
	// svid.pem is written last.
	testkit.Succeeds(t, 20*time.Second, func() error {
		_, err := os.Stat(filepath.Join(out, "svid.pem"))
		return err
	}, "the output was never written")
	svidPEM, err := os.ReadFile(filepath.Join(out, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(svidPEM)
	if blk == nil {
		t.Fatal("svid.pem holds no PEM")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	crls, err := parseCRLs(before)
	if err != nil {
		t.Fatalf("crl.pem before the revocation: %v", err)
	}
	if anyLists(crls, leaf.SerialNumber) {
		t.Fatal("crl.pem lists the output's serial before it was revoked")
	}
	fiBefore, err := os.Stat(crlFile)
	if err != nil {
		t.Fatal(err)
	}

	// An SDS client, as Envoy: it asks for the trust domain's validation
	// context and acknowledges each response.
	conn, err := grpc.NewClient("unix://"+a.workload, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sds, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	bundleName := "spiffe://" + a.td
	if err := sds.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{bundleName}, TypeUrl: secretType}); err != nil {
		t.Fatal(err)
	}
	// sdsCRLs receives the next response, acknowledges it and returns the
	// CRLs of its validation context.
	sdsCRLs := func() ([]*x509.RevocationList, error) {
		resp, err := sds.Recv()
		if err != nil {
			return nil, err
		}
		if err := sds.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{bundleName}, TypeUrl: secretType, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
			return nil, err
		}
		for _, r := range resp.Resources {
			var s tlsv3.Secret
			if err := r.UnmarshalTo(&s); err != nil {
				return nil, err
			}
			if s.Name == bundleName {
				return parseCRLs(s.GetValidationContext().GetCrl().GetInlineBytes())
			}
		}
		return nil, fmt.Errorf("the response holds no %s", bundleName)
	}
	first, err := sdsCRLs()
	if err != nil {
		t.Fatalf("the first SDS validation context: %v", err)
	}
	if anyLists(first, leaf.SerialNumber) {
		t.Fatal("the SDS validation context lists the serial before it was revoked")
	}

	// A reader loops over crl.pem for as long as the revocation takes to
	// reach it.
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		reads   atomic.Int64
		partial atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			b, err := os.ReadFile(crlFile)
			if err == nil {
				_, err = parseCRLs(b)
			}
			if err != nil {
				partial.Store(err.Error())
				return
			}
			reads.Add(1)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()

	revoked := time.Now()
	a.widctl("svid", "revoke", "--spiffe-id", "/svc/files", "--reason", "key leaked").must(t)

	// The SDS stream is pushed a validation context listing the serial.
	sdsDone := make(chan error, 1)
	go func() {
		for {
			crls, err := sdsCRLs()
			if err != nil {
				sdsDone <- err
				return
			}
			if anyLists(crls, leaf.SerialNumber) {
				sdsDone <- nil
				return
			}
		}
	}()
	select {
	case err := <-sdsDone:
		if err != nil {
			t.Fatalf("the SDS stream after the revocation: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("5s after the revocation no SDS validation context lists serial %x; agent log:\n%s", leaf.SerialNumber, a.out)
	}
	t.Logf("revoke to SDS push: %s", time.Since(revoked))

	var after []byte
	testkit.EventuallyEvery(t, 5*time.Second, 20*time.Millisecond, func() bool {
		b, err := os.ReadFile(crlFile)
		if err != nil {
			return false
		}
		crls, err := parseCRLs(b)
		after = b
		return err == nil && anyLists(crls, leaf.SerialNumber)
	}, "crl.pem never listed the revoked serial")
	stop.Store(true)
	wg.Wait()
	if p := partial.Load(); p != nil {
		t.Fatalf("a reader of crl.pem saw a partial file after %d whole reads: %s", reads.Load(), p)
	}
	if string(after) == string(before) {
		t.Fatal("crl.pem is unchanged")
	}
	fiAfter, err := os.Stat(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	if fiAfter.Mode().Perm() != 0o600 {
		t.Fatalf("crl.pem is %v, want 0600", fiAfter.Mode().Perm())
	}
	// Renamed into place, not written over: a reader holding the old file
	// reads it whole.
	if os.SameFile(fiBefore, fiAfter) {
		t.Fatal("crl.pem was written in place, not replaced by a rename")
	}
	t.Logf("%d whole reads of crl.pem while the revocation reached it", reads.Load())
}

// Done-when 3: a user reset revokes the user's current certificates: the
// old login is refused on its very next call, in one sentence that says to
// log in again; the X509-SVID the user issued is listed in the CRL; both
// revocations are audited with the reset as their cause.
func TestUserResetRevokesLogin(t *testing.T) {
	t.Parallel()
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	a.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**").must(t)
	added := a.widctl("user", "add", "alice", "--roles", "dev").must(t)
	invite := inviteRE.FindStringSubmatch(added.stdout)
	if invite == nil {
		t.Fatalf("user add printed no invite:\n%s", added.stdout)
	}
	home := t.TempDir()
	alice := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "XDG_DATA_HOME=" + filepath.Join(home, ".local/share"),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + filepath.Join(home, "no-bus")}
	run := func(stdin string, args ...string) result {
		t.Helper()
		return runWidctl(t, alice, stdin, args...)
	}
	if r := run("correct horse battery staple\n", "login", "--auth", a.addr, "--user", "alice", "--invite", invite[1], "--ca-pin", a.pin, "--password-stdin"); r.code != 0 {
		t.Fatalf("login: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := filepath.Join(t.TempDir(), "svid")
	if r := run("", "svid", "issue", "/team/alice/laptop", "-o", dir); r.code != 0 {
		t.Fatalf("svid issue: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	a.widctl("user", "reset", "alice").must(t)
	r := run("", "svid", "issue", "/team/alice/laptop", "-o", filepath.Join(t.TempDir(), "again"))
	stderr := strings.TrimSpace(r.stderr)
	if r.code == 0 || !strings.Contains(stderr, "your certificate was revoked at") || !strings.Contains(stderr, "(user reset)") ||
		!strings.HasSuffix(stderr, "run widctl login again") || strings.Count(stderr, "\n") != 0 {
		t.Fatalf("the old login after the reset: exit %d, stderr %q; want one sentence saying it was revoked and to run widctl login again", r.code, r.stderr)
	}

	// The SVID alice issued is in the CRL, signed by its CA.
	var ca *x509.Certificate
	var crls []*x509.RevocationList
	for rest := []byte(a.widctl("bundle", "export", "--crl").must(t).stdout); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && string(c.SubjectKeyId) == string(leaf.AuthorityKeyId) {
				ca = c
			}
		case "X509 CRL":
			crl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			crls = append(crls, crl)
		}
	}
	var listed bool
	for _, crl := range crls {
		if ca != nil && crl.CheckSignatureFrom(ca) == nil && lists(crl, leaf.SerialNumber) {
			listed = true
		}
	}
	if !listed {
		t.Fatalf("no CRL signed by alice's SVID's CA lists %x after the reset", leaf.SerialNumber)
	}

	var events []struct {
		Serial  string            `json:"serial"`
		Details map[string]string `json:"details"`
	}
	if err := json.Unmarshal([]byte(a.widctl("audit", "ls", "--type", "svid.x509.revoked", "--format", "json").must(t).stdout), &events); err != nil {
		t.Fatal(err)
	}
	var login, svid bool
	for _, ev := range events {
		if ev.Details["cause"] != "user reset" {
			continue
		}
		switch {
		case ev.Details["ca"] == "user":
			login = true
		case ev.Serial == fmt.Sprintf("%032x", leaf.SerialNumber):
			svid = true
		}
	}
	if !login || !svid {
		t.Fatalf("the reset's revocations are not audited with their cause (login %v, SVID %v): %+v", login, svid, events)
	}
}
