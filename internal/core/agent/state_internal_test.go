package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/resource"
)

func testAuthority(t testing.TB, cn string) []byte {
	t.Helper()
	der, err := newTestAuthority(cn)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newTestAuthority is a self-signed CA certificate (DER) named cn.
func newTestAuthority(cn string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
}

func testDoc(t *testing.T, name, hint string) []byte {
	t.Helper()
	uid := "1000"
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.WorkloadIdentitySpec{SPIFFE: resource.WorkloadSPIFFE{ID: "/svc/" + name, Hint: hint},
			Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &uid}}}}}},
	}
	doc, err := resource.MarshalJSON(wi)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func hintOf(t *testing.T, h *heldIdentity) string {
	t.Helper()
	w, err := h.workload()
	if err != nil {
		t.Fatal(err)
	}
	return w.Identity.Spec.SPIFFE.Hint
}

func identityNames(s *state) []string {
	var out []string
	for _, h := range s.held {
		if h.err == nil {
			out = append(out, h.name)
		}
	}
	return out
}

// TestApplyDelta: a delta removes and replaces identities by name, keeps
// the compiled form of those it does not touch, keeps the bundle unless it
// carries one, and is refused (the agent then asks for a snapshot) when it
// is not based on the state held or a document does not decode.
func TestApplyDelta(t *testing.T) {
	ca1, ca2 := testAuthority(t, "one"), testAuthority(t, "two")
	snap := &authv1.AgentState{TrustDomain: "example.org", Epoch: "e1", Revision: 5, Generation: 1,
		Bundle:             &authv1.AgentBundle{X509Authorities: [][]byte{ca1}, Sequence: 1},
		WorkloadIdentities: [][]byte{testDoc(t, "a", "a"), testDoc(t, "b", "b"), testDoc(t, "c", "c")}}
	s0, skipped, err := newState(snap, nil)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("snapshot: %v %v", err, skipped)
	}
	if got := identityNames(s0); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("snapshot serves %v", got)
	}

	delta := &authv1.AgentState{TrustDomain: "example.org", Epoch: "e1", Revision: 7, BaseRevision: 5, Delta: true, Generation: 2,
		WorkloadIdentities: [][]byte{testDoc(t, "c", "c2"), testDoc(t, "d", "d")}, RemovedWorkloadIdentities: []string{"b", "never-held"}}
	s1, skipped, err := applyDelta(s0, delta)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("delta: %v %v", err, skipped)
	}
	if got := identityNames(s1); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("after the delta the agent serves %v, want [a c d]", got)
	}
	if s1.identityNamed("a") != s0.identityNamed("a") {
		t.Error("an identity the delta did not touch was compiled again")
	}
	if s1.identityNamed("c") == s0.identityNamed("c") || hintOf(t, s1.identityNamed("c")) != "c2" {
		t.Error("a replaced identity kept its old form")
	}
	if s1.pos.Revision != 7 || s1.generation != 2 || !sameBundle(s0, s1) {
		t.Fatalf("after the delta: revision %d, generation %d, same bundle %v", s1.pos.Revision, s1.generation, sameBundle(s0, s1))
	}
	if got := identityNames(s0); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("the delta changed the state it was applied on: %v", got)
	}

	// A bundle change comes alone.
	s2, _, err := applyDelta(s1, &authv1.AgentState{TrustDomain: "example.org", Epoch: "e1", Revision: 8, BaseRevision: 7, Delta: true, Generation: 3,
		Bundle: &authv1.AgentBundle{X509Authorities: [][]byte{ca1, ca2}, Sequence: 2}, Cas: map[string]*authv1.AgentCA{"spiffe": {Sequence: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s2.x509Authorities) != 2 || s2.sequence != 2 || s2.cas["spiffe"].GetSequence() != 2 || !slices.Equal(identityNames(s2), []string{"a", "c", "d"}) {
		t.Fatalf("after a bundle delta: %d authorities, sequence %d, identities %v", len(s2.x509Authorities), s2.sequence, identityNames(s2))
	}

	// An identity that does not validate cannot be placed: the agent
	// drops nothing on a guess, and asks for a snapshot.
	bad := []byte(strings.Replace(string(testDoc(t, "a", "a")), `"/svc/a"`, `"/svc/{{ nonsense"`, 1))
	if _, _, err := applyDelta(s2, &authv1.AgentState{TrustDomain: "example.org", Epoch: "e1", Revision: 9, BaseRevision: 8, Delta: true, WorkloadIdentities: [][]byte{bad}}); err == nil {
		t.Fatal("a delta with an invalid identity was applied")
	}
	s3 := s2
	s3.pos.Revision = 9

	for name, d := range map[string]*authv1.AgentState{
		"a gap":              {TrustDomain: "example.org", Epoch: "e1", Revision: 12, BaseRevision: 10, Delta: true},
		"another epoch":      {TrustDomain: "example.org", Epoch: "e2", Revision: 10, BaseRevision: 9, Delta: true},
		"another domain":     {TrustDomain: "other.org", Epoch: "e1", Revision: 10, BaseRevision: 9, Delta: true},
		"a revision back":    {TrustDomain: "example.org", Epoch: "e1", Revision: 9, BaseRevision: 9, Delta: true},
		"a document garbled": {TrustDomain: "example.org", Epoch: "e1", Revision: 10, BaseRevision: 9, Delta: true, WorkloadIdentities: [][]byte{[]byte("{not json")}},
	} {
		if _, _, err := applyDelta(s3, d); err == nil {
			t.Errorf("a delta with %s was applied", name)
		}
	}
	if _, _, err := applyDelta(nil, delta); err == nil {
		t.Error("a delta was applied with no state")
	}
	// A state from a full-sync auth service has no epoch: no delta applies.
	full, _, err := newState(&authv1.AgentState{TrustDomain: "example.org", Bundle: snap.Bundle}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := applyDelta(full, &authv1.AgentState{TrustDomain: "example.org", Revision: 1, Delta: true}); err == nil {
		t.Error("a delta was applied on a state with no epoch")
	}
}
