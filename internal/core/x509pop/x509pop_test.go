package x509pop_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/x509pop"
)

func TestChallenges(t *testing.T) {
	now := time.Now()
	c := x509pop.NewChallenges(func() time.Time { return now })
	ch, exp, err := c.Issue("nodes")
	if err != nil || !exp.After(now) || len(ch) != x509pop.ChallengeLen {
		t.Fatal(err, exp, len(ch))
	}
	if err := c.Redeem(ch, "other"); !errors.Is(err, x509pop.ErrChallengeInvalid) {
		t.Fatalf("redeeming for another token: %v", err)
	}
	if err := c.Redeem(ch[:10], "nodes"); !errors.Is(err, x509pop.ErrChallengeInvalid) {
		t.Fatalf("redeeming a short challenge: %v", err)
	}
	if err := c.Redeem(ch, "nodes"); err != nil {
		t.Fatal(err)
	}
	if err := c.Redeem(ch, "nodes"); !errors.Is(err, x509pop.ErrChallengeUsed) {
		t.Fatalf("second redeem: %v", err)
	}
	ch2, _, _ := c.Issue("nodes")
	now = now.Add(x509pop.DefaultChallengeTTL + time.Second)
	if err := c.Redeem(ch2, "nodes"); !errors.Is(err, x509pop.ErrChallengeExpired) {
		t.Fatalf("late redeem: %v", err)
	}
	// Another process's challenges (another key) are not ours.
	other := x509pop.NewChallenges(nil)
	ch3, _, _ := other.Issue("nodes")
	if err := c.Redeem(ch3, "nodes"); !errors.Is(err, x509pop.ErrChallengeInvalid) {
		t.Fatalf("a challenge of another auth process: %v", err)
	}
}

// TestSignVerify: every key type an operator's CA may issue signs a
// challenge that Verify accepts with the certificate, and no other key's
// signature passes.
func TestSignVerify(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	msg := x509pop.Message([]byte("challenge"), []byte("csr"))
	for _, key := range []crypto.Signer{ec, rk, ed} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "n"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		sig, err := x509pop.Sign(key, msg)
		if err != nil {
			t.Fatalf("%T: %v", key, err)
		}
		if err := x509pop.Verify(cert, msg, sig); err != nil {
			t.Fatalf("%T: %v", key, err)
		}
		if err := x509pop.Verify(cert, x509pop.Message([]byte("challenge"), []byte("other csr")), sig); err == nil {
			t.Fatalf("%T: a signature over another CSR verified", key)
		}
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if bad, _ := x509pop.Sign(other, msg); x509pop.Verify(cert, msg, bad) == nil {
			t.Fatalf("%T: another key's signature verified", key)
		}
	}
}

// Answered challenges are forgotten as they expire, at the next answer,
// not only once the store is full; a full store refuses until one does.
func TestAnsweredChallengesAreForgottenAsTheyExpire(t *testing.T) {
	now := time.Now()
	c := x509pop.NewChallenges(func() time.Time { return now })
	x509pop.SetMax(c, 3)
	redeem := func() error {
		t.Helper()
		ch, _, err := c.Issue("nodes")
		if err != nil {
			t.Fatal(err)
		}
		return c.Redeem(ch, "nodes")
	}
	for range 2 {
		if err := redeem(); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(x509pop.DefaultChallengeTTL / 2)
	if err := redeem(); err != nil {
		t.Fatal(err)
	}
	if err := redeem(); !errors.Is(err, x509pop.ErrBusy) {
		t.Fatalf("redeeming into a full store: %v, want ErrBusy", err)
	}
	// The first two expire; the next answer forgets them.
	now = now.Add(x509pop.DefaultChallengeTTL/2 + time.Second)
	if err := redeem(); err != nil {
		t.Fatal(err)
	}
	if n := x509pop.Remembered(c); n != 2 {
		t.Fatalf("remembered %d answered challenges, want 2 (the two unexpired)", n)
	}
	// Again with room left: expired ones go even when not needed.
	now = now.Add(x509pop.DefaultChallengeTTL + time.Second)
	if err := redeem(); err != nil {
		t.Fatal(err)
	}
	if n := x509pop.Remembered(c); n != 1 {
		t.Fatalf("remembered %d answered challenges, want 1: expired ones were kept", n)
	}
}

// Each source gets challenges at a bounded rate; another source is not
// held up by it, and the rate comes back with time.
func TestChallengeRatePerSource(t *testing.T) {
	now := time.Now()
	c := x509pop.NewChallenges(func() time.Time { return now })
	n := 0
	for c.AllowSource("192.0.2.1") {
		n++
		if n > 1000 {
			t.Fatal("a source got over 1000 challenges at once")
		}
	}
	if n < 5 || n > 100 {
		t.Fatalf("a source got %d challenges at once, want a burst of tens", n)
	}
	if !c.AllowSource("192.0.2.2") {
		t.Fatal("another source was refused")
	}
	now = now.Add(10 * time.Second)
	if !c.AllowSource("192.0.2.1") {
		t.Fatal("the source was still refused 10s later")
	}
}
