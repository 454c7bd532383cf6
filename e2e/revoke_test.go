package e2e

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/testkit"
)

// crlFrom fetches and checks the CRL of the CA key keyID from the diag
// listener: it parses, is signed by ca, and its next update is bounded.
func crlFrom(t *testing.T, diag, keyID string, ca *x509.Certificate) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get("http://" + diag + "/crl/" + keyID + ".crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /crl/%s.crl: %s: %s", keyID, resp.Status, der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("the served CRL does not parse: %v", err)
	}
	if err := crl.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("the served CRL is not signed by the X.509 CA: %v", err)
	}
	if crl.NextUpdate.Sub(crl.ThisUpdate) > 2*time.Hour || crl.NextUpdate.Before(time.Now()) {
		t.Fatalf("the CRL's next update %s is not bounded (this update %s)", crl.NextUpdate, crl.ThisUpdate)
	}
	return crl
}

func lists(crl *x509.RevocationList, serial *big.Int) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

// Done-when 2 (the auth service's part): svid revoke --spiffe-id lists the
// workload's serial in a CRL signed by the CA, served on the diag listener
// with an increasing crlNumber and through bundle export --crl; an unknown
// serial is refused with one sentence and changes nothing.
func TestRevokeListsSerialInCRL(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth", "--diag-addr", "127.0.0.1:0")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+ag.workload))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var leaf *x509.Certificate
	testkit.EventuallyEvery(t, 20*time.Second, 100*time.Millisecond, func() bool {
		svids, _ := c.FetchX509SVIDs(ctx)
		for _, s := range svids {
			if strings.HasSuffix(s.ID.String(), "/svc/web") {
				leaf = s.Certificates[0]
			}
		}
		return leaf != nil
	}, "the workload never got /svc/web")
	bundles, err := c.FetchX509Bundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ca *x509.Certificate
	for _, b := range bundles.Bundles() {
		for _, a := range b.X509Authorities() {
			if string(a.SubjectKeyId) == string(leaf.AuthorityKeyId) {
				ca = a
			}
		}
	}
	if ca == nil {
		t.Fatal("no CA in the bundle signed the SVID")
	}
	keyID := hex.EncodeToString(leaf.AuthorityKeyId)
	before := crlFrom(t, auth.diag, keyID, ca)
	if lists(before, leaf.SerialNumber) {
		t.Fatal("the CRL lists a serial before it was revoked")
	}

	serial := fmt.Sprintf("%032x", leaf.SerialNumber)
	out := auth.widctl("svid", "revoke", "--spiffe-id", "/svc/web", "--reason", "key leaked").must(t).stdout
	if !strings.Contains(out, serial) {
		t.Fatalf("svid revoke does not name the serial %s:\n%s", serial, out)
	}
	// The agent gets the CRL with its state and re-issues the revoked SVID at once.
	if !testkit.WithinEvery(5*time.Second, 50*time.Millisecond, func() bool {
		svids, ferr := c.FetchX509SVIDs(ctx)
		err = ferr
		for _, s := range svids {
			if strings.HasSuffix(s.ID.String(), "/svc/web") && s.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("5s after the revocation the agent still serves the revoked SVID (%v); agent log:\n%s", err, ag.out)
	}
	after := crlFrom(t, auth.diag, keyID, ca)
	if !lists(after, leaf.SerialNumber) {
		t.Fatalf("the CRL does not list the revoked serial %s", serial)
	}
	if after.Number.Cmp(before.Number) <= 0 {
		t.Fatalf("crlNumber went from %s to %s, not up", before.Number, after.Number)
	}

	exported := auth.widctl("bundle", "export", "--crl").must(t).stdout
	var found bool
	for rest := []byte(exported); ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "X509 CRL" {
			crl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil || crl.CheckSignatureFrom(ca) != nil {
				t.Fatalf("bundle export --crl gave a CRL that does not check: %v", err)
			}
			found = lists(crl, leaf.SerialNumber)
		}
	}
	if !found {
		t.Fatalf("bundle export --crl does not list the revoked serial:\n%s", exported)
	}

	// An unknown serial: one sentence, nothing revoked.
	r := auth.widctl("svid", "revoke", "--serial", "00112233445566778899aabbccddeeff")
	const unknown = "no unexpired X509-SVID with serial 00112233445566778899aabbccddeeff was issued: check the serial with widctl audit ls --type svid.x509.issued; nothing was revoked"
	if r.code == 0 || !strings.Contains(r.stderr, unknown) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("revoking an unknown serial: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := len(crlFrom(t, auth.diag, keyID, ca).RevokedCertificateEntries); n != 1 {
		t.Fatalf("the CRL lists %d serials after a refused revocation, want 1", n)
	}
}

// pemCRLs parses the X509 CRL blocks of b, checking each against the CA
// certificate of its key among cas (by authority key ID), and returns
// them by key ID.
func pemCRLs(t *testing.T, what string, b []byte, cas map[string]*x509.Certificate) map[string]*x509.RevocationList {
	t.Helper()
	out := map[string]*x509.RevocationList{}
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			t.Fatalf("%s holds a CRL that does not parse: %v", what, err)
		}
		keyID := hex.EncodeToString(crl.AuthorityKeyId)
		ca := cas[keyID]
		if ca == nil {
			t.Fatalf("%s holds a CRL of key %s, which is not in the bundle", what, keyID)
		}
		if err := crl.CheckSignatureFrom(ca); err != nil {
			t.Fatalf("%s holds a CRL of key %s that key did not sign: %v", what, keyID, err)
		}
		out[keyID] = crl
	}
	return out
}

// Item 1 of the CRL part of issue 20, end to end: mid-rotation both X.509
// CA keys are in the bundle and each has its CRL, served at
// /crl/<key>.crl, in bundle export --crl, in the crl.pem file output and in
// SDS validation contexts. A certificate of the old key revoked
// mid-rotation is listed in the old key's CRL, not the new one's.
func TestRevokeMidRotationListsSerialInSignersCRL(t *testing.T) {
	t.Parallel()
	auth := startAgent(t, newDataDir(t), "--roles", "auth", "--diag-addr", "127.0.0.1:0")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)
	dir := newDataDir(t)
	out := filepath.Join(dir, "out")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("outputs:\n  - type: x509\n    path: /svc/web\n    dir: %s\n", out)), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := startAgent(t, dir, "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin, "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	updates := watchSDS(ctx, t, ag.workload)

	// The SVID of the old key, which the file output holds.
	var old *x509.Certificate
	testkit.Succeeds(t, 20*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(out, "svid.pem"))
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return errors.New("svid.pem holds no PEM")
		}
		old, err = x509.ParseCertificate(blk.Bytes)
		return err
	}, "the file output was never written")
	oldKey := hex.EncodeToString(old.AuthorityKeyId)

	rotateTo(t, auth, "spiffe", "init")
	rotateTo(t, auth, "spiffe", "update_clients")
	cas := map[string]*x509.Certificate{}
	bundle := auth.widctl("bundle", "export").must(t).stdout
	for rest := []byte(bundle); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		cas[hex.EncodeToString(c.SubjectKeyId)] = c
	}
	if len(cas) != 2 || cas[oldKey] == nil {
		t.Fatalf("mid-rotation the bundle holds %d X.509 authorities (the old key's among them: %v), want 2", len(cas), cas[oldKey] != nil)
	}
	var newKey string
	for k := range cas {
		if k != oldKey {
			newKey = k
		}
	}

	serial := fmt.Sprintf("%032x", old.SerialNumber)
	auth.widctl("svid", "revoke", "--serial", serial, "--reason", "key leaked").must(t)

	// Served on the diag listener, one CRL per key.
	if !lists(crlFrom(t, auth.diag, oldKey, cas[oldKey]), old.SerialNumber) {
		t.Fatalf("the old key's CRL does not list %s, which it signed", serial)
	}
	if lists(crlFrom(t, auth.diag, newKey, cas[newKey]), old.SerialNumber) {
		t.Fatalf("the new key's CRL lists %s, which the old key signed", serial)
	}
	// bundle export --crl writes both.
	exported := pemCRLs(t, "bundle export --crl", []byte(auth.widctl("bundle", "export", "--crl").must(t).stdout), cas)
	if len(exported) != 2 || !lists(exported[oldKey], old.SerialNumber) || lists(exported[newKey], old.SerialNumber) {
		t.Fatalf("bundle export --crl gave CRLs of %d keys; the old key's lists the serial: %v, the new key's: %v",
			len(exported), exported[oldKey] != nil && lists(exported[oldKey], old.SerialNumber), exported[newKey] != nil && lists(exported[newKey], old.SerialNumber))
	}
	// crl.pem beside bundle.pem.
	testkit.Succeeds(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(out, "crl.pem"))
		if err != nil {
			return err
		}
		got := pemCRLs(t, "crl.pem", b, cas)
		if len(got) != 2 || !lists(got[oldKey], old.SerialNumber) || lists(got[newKey], old.SerialNumber) {
			return fmt.Errorf("crl.pem holds CRLs of %d keys, not yet the old key's listing %s alone", len(got), serial)
		}
		return nil
	}, "the crl.pem output never carried both keys' CRLs with the serial in the old key's")
	// SDS: the validation context carries both keys' CRLs.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u := <-updates:
			if u.err != nil {
				t.Fatalf("SDS: %v", u.err)
			}
			if u.revoked[serial] && u.crls == 2 {
				return
			}
			continue
		case <-deadline:
			t.Fatalf("no SDS push carried both keys' CRLs listing %s; agent log:\n%s", serial, ag.out)
		}
	}
}

// One --diag-addr serves the CRLs in every role: widagent start with both
// roles serves the agent's diagnostics listener, which must carry the auth
// service's /crl/ too (it answered 404 there when only the auth-only
// listener mounted it).
func TestCombinedStartServesCRLsOnDiag(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir, "--diag-addr", "127.0.0.1:0")
	pemFile := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(pemFile, []byte(a.widctl("bundle", "export", "--format", "pem").must(t).stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	cas := readCerts(t, pemFile)
	if len(cas) == 0 {
		t.Fatal("bundle export --format pem wrote no certificate")
	}
	for _, ca := range cas {
		crlFrom(t, a.diag, hex.EncodeToString(ca.SubjectKeyId), ca)
	}
}
