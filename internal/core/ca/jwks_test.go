package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/exp/bundle/witbundle"

	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/ca/catest"
)

type jwksDoc struct {
	Keys []struct {
		Use string `json:"use"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
	} `json:"keys"`
}

func TestJWTAndWITJWKS(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	jwtKS, _ := m.Signer(ca.TypeJWT)
	witKS, _ := m.Signer(ca.TypeWIT)
	if jwtKS.KID == witKS.KID {
		t.Fatal("the jwt and wit CAs share a key")
	}
	for _, tt := range []struct {
		name string
		get  func() ([]byte, error)
		use  string
		ks   *ca.KeySet
	}{
		{"jwt", m.JWTJWKS, "jwt-svid", jwtKS},
		{"wit", m.WITJWKS, "wit-svid", witKS},
	} {
		raw, err := tt.get()
		if err != nil {
			t.Fatalf("%s JWKS: %v", tt.name, err)
		}
		var doc jwksDoc
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		if len(doc.Keys) != 1 || doc.Keys[0].Use != tt.use || doc.Keys[0].Kid != tt.ks.KID || doc.Keys[0].Alg != "ES256" {
			t.Errorf("%s JWKS %s, want one key with use %s, kid %s, alg ES256", tt.name, raw, tt.use, tt.ks.KID)
		}
		again, _ := tt.get()
		if !bytes.Equal(raw, again) {
			t.Errorf("%s JWKS bytes differ between calls", tt.name)
		}
	}

	jwtRaw, _ := m.JWTJWKS()
	jb, err := jwtbundle.Parse(td, jwtRaw)
	if err != nil {
		t.Fatalf("jwtbundle.Parse: %v", err)
	}
	if pub, ok := jb.FindJWTAuthority(jwtKS.KID); !ok || !jwtKS.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("the jwt JWKS does not hold the jwt CA key")
	}
	witRaw, _ := m.WITJWKS()
	wb, err := witbundle.Parse(td, witRaw)
	if err != nil {
		t.Fatalf("witbundle.Parse: %v", err)
	}
	if pub, ok := wb.FindWITAuthority(witKS.KID); !ok || !witKS.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("the wit JWKS does not hold the wit CA key")
	}
	if _, ok := jb.FindJWTAuthority(witKS.KID); ok {
		t.Error("the wit key is in the jwt JWKS")
	}
	bundle, _ := m.Bundle()
	if _, ok := bundle.FindJWTAuthority(witKS.KID); ok {
		t.Error("the wit key is in the SPIFFE bundle as a JWT authority")
	}
	b, err := m.WITBundle()
	if err != nil || !b.Equal(wb) {
		t.Errorf("WITBundle() differs from the parsed WIT JWKS (%v)", err)
	}
}

func TestOnChangeRunsAfterReload(t *testing.T) {
	m, _ := catest.NewManager(t, nil)
	var calls atomic.Int32
	var seq atomic.Uint64
	m.OnChange(func() {
		calls.Add(1)
		seq.Store(m.BundleSequence())
	})
	if err := m.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || seq.Load() != m.BundleSequence() {
		t.Fatalf("OnChange ran %d times after one reload (saw sequence %d)", calls.Load(), seq.Load())
	}
}
