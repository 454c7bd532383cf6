package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
)

// exportedCRLs are the CRLs widctl bundle export --crl prints.
func exportedCRLs(t *testing.T, a *agent) []*x509.RevocationList {
	t.Helper()
	var out []*x509.RevocationList
	for rest := []byte(a.widctl("bundle", "export", "--crl").must(t).stdout); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return out
		}
		if blk.Type == "X509 CRL" {
			crl, err := x509.ParseRevocationList(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, crl)
		}
	}
}

// issueMany issues n X509-SVIDs of id as the admin and returns their serials.
func issueMany(t *testing.T, a *agent, id string, n int) []*big.Int {
	t.Helper()
	admin := a.admin()
	key, err := client.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	var out []*big.Int
	for range n {
		resp, err := admin.SignX509SVID(context.Background(), &authv1.SignX509SVIDRequest{SpiffeId: id, Csr: csr})
		if err != nil {
			t.Fatal(err)
		}
		s, ok := new(big.Int).SetString(resp.Serial, 16)
		if !ok {
			t.Fatalf("serial %q is not hex", resp.Serial)
		}
		out = append(out, s)
	}
	return out
}

// An auth restart (here a kill -9) keeps every lock and revocation: the
// lock still refuses, with its reason, and the CRL still lists the serial.
func TestRestartKeepsLocksAndRevocations(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir, "--roles", "auth")
	serial := issueMany(t, a, "/svc/old", 1)[0]
	a.widctl("svid", "revoke", "--serial", fmt.Sprintf("%x", serial), "--reason", "key leaked").must(t)
	a.widctl("lock", "create", "--spiffe-id", "/svc/pay", "--reason", "under audit", "--name", "pay").must(t)
	a.kill()

	b := startAgent(t, dir, "--roles", "auth")
	if out := b.widctl("lock", "ls").must(t).stdout; !strings.Contains(out, "pay") || !strings.Contains(out, "under audit") {
		t.Fatalf("after the restart lock ls does not show lock pay:\n%s", out)
	}
	r := b.widctl("svid", "issue", "/svc/pay", "-o", filepath.Join(t.TempDir(), "out"))
	if r.code == 0 || !strings.Contains(r.stderr, "lock pay") || !strings.Contains(r.stderr, "under audit") {
		t.Fatalf("after the restart issuing a locked ID: exit %d, stderr %q", r.code, r.stderr)
	}
	var listed bool
	for _, crl := range exportedCRLs(t, b) {
		listed = listed || lists(crl, serial)
	}
	if !listed {
		t.Fatalf("after the restart the CRL does not list the revoked serial %x", serial)
	}
}

// A kill -9 while a revocation of many serials is under way leaves the
// store and the CRL consistent: after each restart the CRL lists all of
// them or none (the revocation is one transaction, and the CRL is built
// from the store), and the audit chain verifies. The kill comes at a few
// points after widctl starts, so that some land before the RPC and some
// during it; revoking again at the end works.
func TestKillMidRevokeLeavesCRLConsistent(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	a := startAgent(t, dir, "--roles", "auth")
	const n = 200
	serials := issueMany(t, a, "/svc/many", n)
	count := func(a *agent) int {
		c := 0
		for _, crl := range exportedCRLs(t, a) {
			for _, s := range serials {
				if lists(crl, s) {
					c++
				}
			}
		}
		return c
	}
	for _, after := range []time.Duration{0, 200 * time.Millisecond, 300 * time.Millisecond, 350 * time.Millisecond, 400 * time.Millisecond, 450 * time.Millisecond, 600 * time.Millisecond} {
		cmd := exec.Command(filepath.Join(binDir, "widctl"), "svid", "revoke", "--spiffe-id", "/svc/many", "--reason", "host lost")
		cmd.Env = append(cmd.Environ(), "WIDCTL_ADMIN_SOCKET="+a.socket, "HOME="+t.TempDir())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The fault: widagent dies at a chosen point of the revocation.
		killed := time.AfterFunc(after, a.kill)
		err := cmd.Wait()
		if killed.Stop() {
			// widctl was done first: kill anyway, the restart is the test.
			a.kill()
		}
		<-a.exited
		a = startAgent(t, dir, "--roles", "auth")
		got := count(a)
		t.Logf("kill %s after widctl started (widctl: %v): %d of %d serials revoked", after, err, got, n)
		if got != 0 && got != n {
			t.Fatalf("after a kill -9 mid-revoke the CRL lists %d of the %d serials, want all or none", got, n)
		}
		a.widctl("audit", "verify").must(t)
	}
	a.widctl("svid", "revoke", "--spiffe-id", "/svc/many", "--reason", "host lost").must(t)
	if got := count(a); got != n {
		t.Fatalf("after revoking again the CRL lists %d of %d serials", got, n)
	}
}
