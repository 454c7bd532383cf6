// Package kubejointest is a Kubernetes service-account token issuer for
// tests: real keys (go-jose), a JWKS endpoint and a TokenReview endpoint on
// a loopback TLS server, and tokens shaped as the kube-apiserver mints
// projected service-account tokens.
package kubejointest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IssuerURL is the iss of the test cluster's tokens.
const IssuerURL = "https://kubernetes.default.svc.cluster.local"

// Issuer is a test cluster's service-account token issuer.
type Issuer struct {
	// Server serves /openid/v1/jwks and the TokenReview API over TLS.
	Server *httptest.Server
	// CAFile holds the server's certificate, for ca_file.
	CAFile string
	// TokenFile holds the bearer token the TokenReview API accepts.
	TokenFile string
	// JWKSHits counts requests to the JWKS endpoint; ReviewHits the
	// well-formed TokenReviews.
	JWKSHits   atomic.Int64
	ReviewHits atomic.Int64

	mu        sync.Mutex
	published []jose.JSONWebKey
	keys      map[string]crypto.Signer
	reviews   map[string]authnv1.TokenReviewStatus
	reviewer  string
}

// NewIssuer starts an issuer with one published key, "key-1".
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{keys: map[string]crypto.Signer{}, reviews: map[string]authnv1.TokenReviewStatus{}, reviewer: "reviewer-token"}
	is.AddKey(t, "key-1", true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.JWKSHits.Add(1)
		is.mu.Lock()
		set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), is.published...)}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", is.serveTokenReview)
	is.Server = httptest.NewUnstartedServer(mux)
	// Tests refuse its certificate on purpose; that is not news.
	is.Server.Config.ErrorLog = log.New(io.Discard, "", 0)
	is.Server.StartTLS()
	t.Cleanup(is.Server.Close)
	dir := t.TempDir()
	is.CAFile = filepath.Join(dir, "ca.crt")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: is.Server.Certificate().Raw})
	if err := os.WriteFile(is.CAFile, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	is.TokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(is.TokenFile, []byte(is.reviewer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return is
}

// JWKSURL is the issuer's JWKS endpoint.
func (is *Issuer) JWKSURL() string { return is.Server.URL + "/openid/v1/jwks" }

// JWKS is the published key set as JSON, for a static jwks.
func (is *Issuer) JWKS(t testing.TB) string {
	t.Helper()
	is.mu.Lock()
	defer is.mu.Unlock()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: is.published})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// AddKey makes a signing key; published keys appear in the JWKS.
func (is *Issuer) AddKey(t testing.TB, kid string, publish bool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = key
	if publish {
		is.published = append(is.published, jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
}

// Token describes a projected service-account token.
type Token struct {
	Namespace, ServiceAccount, Pod, Node string
	Audience                             []string
	Issuer                               string
	IssuedAt                             time.Time
	Lifetime                             time.Duration
	// Kid signs with that key; "" means key-1.
	Kid string
}

// Good is a valid token's description for audience at now.
func Good(audience string, now time.Time) Token {
	return Token{
		Namespace: "wid", ServiceAccount: "wid-agent", Pod: "wid-agent-x7k2p", Node: "node-1",
		Audience: []string{audience}, Issuer: IssuerURL, IssuedAt: now.Add(-time.Minute), Lifetime: time.Hour,
	}
}

// Sign mints the token as the kube-apiserver would.
func (is *Issuer) Sign(t testing.TB, tok Token) string {
	t.Helper()
	kid := tok.Kid
	if kid == "" {
		kid = "key-1"
	}
	is.mu.Lock()
	key := is.keys[kid]
	is.mu.Unlock()
	if key == nil {
		t.Fatalf("no key %q", kid)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"iss": tok.Issuer,
		"sub": "system:serviceaccount:" + tok.Namespace + ":" + tok.ServiceAccount,
		"aud": tok.Audience,
		"iat": tok.IssuedAt.Unix(),
		"nbf": tok.IssuedAt.Unix(),
		"exp": tok.IssuedAt.Add(tok.Lifetime).Unix(),
		"jti": "6c8d1f4e-3a2b-4c5d-9e8f-7a6b5c4d3e2f",
		"kubernetes.io": map[string]any{
			"namespace":      tok.Namespace,
			"serviceaccount": map[string]any{"name": tok.ServiceAccount, "uid": "3f0c7a1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b"},
			"pod":            map[string]any{"name": tok.Pod, "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
			"node":           map[string]any{"name": tok.Node, "uid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},
			"warnafter":      tok.IssuedAt.Add(tok.Lifetime / 2).Unix(),
		},
	}
	s, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Review sets what the TokenReview stand-in answers for token.
func (is *Issuer) Review(token string, st authnv1.TokenReviewStatus) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.reviews[token] = st
}

// ReviewedPod is an authenticated review of a pod-bound token.
func ReviewedPod(namespace, sa, pod string) authnv1.TokenReviewStatus {
	return authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
		Username: "system:serviceaccount:" + namespace + ":" + sa,
		UID:      "3f0c7a1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		Extra: map[string]authnv1.ExtraValue{
			"authentication.kubernetes.io/pod-name":      {pod},
			"authentication.kubernetes.io/pod-uid":       {"9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
			"authentication.kubernetes.io/node-name":     {"node-1"},
			"authentication.kubernetes.io/credential-id": {"JTI=6c8d1f4e"},
		},
	}}
}

// serveTokenReview answers as the kube-apiserver does: 401 without the
// reviewer's credentials, 400 for a body that is not a TokenReview, and
// otherwise 201 with the request's spec echoed and the status set. Both
// ways the JSON goes through the Kubernetes API types, strictly.
func (is *Issuer) serveTokenReview(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	reviewer := is.reviewer
	is.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+reviewer {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	var req authnv1.TokenReview
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.APIVersion != "authentication.k8s.io/v1" || req.Kind != "TokenReview" {
		writeStatus(w, http.StatusBadRequest, "the body is not an authentication.k8s.io/v1 TokenReview")
		return
	}
	is.ReviewHits.Add(1)
	is.mu.Lock()
	st, ok := is.reviews[req.Spec.Token]
	is.mu.Unlock()
	if !ok {
		st = authnv1.TokenReviewStatus{Error: "[invalid bearer token, square/go-jose: error in cryptographic primitive]"}
	}
	if st.Authenticated && st.Audiences == nil {
		st.Audiences = req.Spec.Audiences
	}
	resp := authnv1.TokenReview{TypeMeta: req.TypeMeta, Spec: req.Spec, Status: st}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(&resp)
}

func writeStatus(w http.ResponseWriter, code int, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(strings.ReplaceAll(http.StatusText(code), " ", "")), Code: int32(code),
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&st)
}
