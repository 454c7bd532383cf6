// Package kubejoin checks the Kubernetes service-account tokens that agents
// present to join with the kubernetes method: against the cluster's OIDC
// issuer keys (a configured cluster's JWKS URL, fetched and cached, or a
// static JWKS) or through
// the cluster's TokenReview API. Which clusters it may call, and with what
// files, is the auth service's configuration (Cluster), never a join token's.
// It answers who the token's service account
// and pod are, or a Refusal that says which check failed.
//
// A service-account token is a bearer credential: nothing here logs it,
// puts it in an error, or keeps it.
package kubejoin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/wid-project/wid/internal/core/resource"
)

// Audience is the audience a projected service-account token must carry to
// join trust domain td: "wid:" and the trust domain's name, e.g.
// wid:example.org. The agent's manifests set it in the projected volume.
func Audience(td string) string { return "wid:" + td }

// DefaultTokenFile is where the agent reads its projected service-account
// token unless told otherwise, and where deploy/kubernetes mounts it.
const DefaultTokenFile = "/var/run/secrets/tokens/wid"

const (
	// MinLifetime is the shortest token life accepted: Kubernetes gives
	// projected tokens at least 10 minutes, and a token without a bound
	// life (the legacy secret-based kind) must not join.
	MinLifetime = 600 * time.Second
	// Leeway absorbs clock skew between the cluster and the auth service.
	Leeway = 30 * time.Second
	// FetchTimeout bounds every request to a JWKS URL or the API server.
	FetchTimeout = 10 * time.Second
	// MinRefetch is the least time between two fetches of one JWKS URL, so
	// that tokens naming unknown keys cannot make us hammer the issuer.
	MinRefetch = 30 * time.Second
	// MaxKeysAge is how long fetched keys are used before they are fetched
	// again; keys rotate rarely, and an unknown kid refetches sooner.
	MaxKeysAge = time.Hour
)

// Checks a Refusal names.
const (
	CheckMalformed      = "malformed"
	CheckUnknownKey     = "unknown key"
	CheckSignature      = "signature"
	CheckIssuer         = "issuer"
	CheckAudience       = "audience"
	CheckExpired        = "expired"
	CheckNotYetValid    = "not yet valid"
	CheckLifetime       = "lifetime"
	CheckServiceAccount = "service account"
	CheckTokenReview    = "token review"
	CheckKeys           = "issuer keys"
)

// Refusal is a token that did not pass: Check names the check, Reason says
// what was wrong and what to do, and holds nothing secret.
type Refusal struct {
	Check  string
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

func refuse(check, format string, args ...any) *Refusal {
	return &Refusal{Check: check, Reason: fmt.Sprintf(format, args...)}
}

// ServiceAccount is who a checked token speaks for.
type ServiceAccount struct {
	Namespace string
	Name      string
	// PodName and PodUID are set for tokens bound to a pod; NodeName when
	// the cluster names the node (Kubernetes 1.30 and later).
	PodName  string
	PodUID   string
	NodeName string
}

// String is namespace:name, as allow rules write it.
func (sa ServiceAccount) String() string { return sa.Namespace + ":" + sa.Name }

// Verifier checks tokens. It caches fetched JWKS per URL; one Verifier
// serves every join token of an auth service.
type Verifier struct {
	clock  func() time.Time
	logger *slog.Logger
	// env reads the in-cluster defaults; os.Getenv outside tests.
	env func(string) string

	// clusters are the auth service's configured clusters, by name.
	clusters map[string]*Cluster

	mu   sync.Mutex
	sets map[string]*keySet
}

// Options configure a Verifier.
type Options struct {
	// Clock defaults to time.Now.
	Clock  func() time.Time
	Logger *slog.Logger
	// Getenv defaults to os.Getenv; it finds the in-cluster API server.
	Getenv func(string) string
	// Clusters are the clusters join tokens may name (see ValidateClusters).
	Clusters []Cluster
}

// NewVerifier returns a Verifier with an empty key cache.
func NewVerifier(o Options) *Verifier {
	v := &Verifier{clock: o.Clock, logger: o.Logger, env: o.Getenv, sets: map[string]*keySet{}, clusters: map[string]*Cluster{}}
	for i := range o.Clusters {
		v.clusters[o.Clusters[i].Name] = &o.Clusters[i]
	}
	if v.clock == nil {
		v.clock = time.Now
	}
	if v.logger == nil {
		v.logger = slog.New(slog.DiscardHandler)
	}
	if v.env == nil {
		v.env = getenv
	}
	return v
}

// signatureAlgorithms are what Kubernetes signs service-account tokens with.
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// Verify checks token for the join configuration k and audience. A token
// that fails a check gets a *Refusal; other errors (a JWKS URL that cannot
// be reached, an API server that answers garbage) are the auth service's
// problem and say so.
func (v *Verifier) Verify(ctx context.Context, k *resource.KubernetesJoin, audience, token string) (ServiceAccount, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return ServiceAccount{}, refuse(CheckMalformed, "no service-account token was sent: mount a projected service-account token with audience %s and pass its path with --sa-token-file", audience)
	}
	var cluster *Cluster
	if k.Cluster != "" {
		c, err := v.cluster(k.Cluster)
		if err != nil {
			return ServiceAccount{}, err
		}
		cluster = c
	}
	if k.TokenReview {
		return v.review(ctx, cluster, audience, token)
	}
	tok, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil {
		return ServiceAccount{}, refuse(CheckMalformed, "the service-account token is not a signed JWT (%s): pass the file of a projected service-account token", joseReason(err))
	}
	if len(tok.Headers) != 1 {
		return ServiceAccount{}, refuse(CheckMalformed, "the service-account token has %d signatures, not one", len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	keys, err := v.keys(ctx, k, cluster, kid)
	if err != nil {
		return ServiceAccount{}, err
	}
	if len(keys) == 0 {
		return ServiceAccount{}, refuse(CheckUnknownKey, "the service-account token is signed by key %q, which issuer %s does not publish: check that the join token's issuer keys are this cluster's", kid, k.Issuer)
	}
	var payload json.RawMessage
	verified := false
	for _, key := range keys {
		if err := tok.Claims(key.Key, &payload); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return ServiceAccount{}, refuse(CheckSignature, "the service-account token's signature does not verify with key %q of issuer %s", kid, k.Issuer)
	}
	c, err := ParseClaims(payload)
	if err != nil {
		return ServiceAccount{}, err
	}
	if err := c.check(k.Issuer, audience, v.clock()); err != nil {
		return ServiceAccount{}, err
	}
	return c.ServiceAccount, nil
}

// joseReason shortens go-jose's error text to its own words.
func joseReason(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// Claims are what a verified service-account token says.
type Claims struct {
	jwt.Claims
	ServiceAccount ServiceAccount
}

// kubernetesClaim is the "kubernetes.io" claim of service-account tokens.
type kubernetesClaim struct {
	Namespace      string `json:"namespace"`
	ServiceAccount *struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"serviceaccount"`
	Pod *struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"pod"`
	Node *struct {
		Name string `json:"name"`
	} `json:"node"`
}

// ParseClaims reads a token payload: the registered claims and the
// "kubernetes.io" claim, whose namespace and service account must be valid
// Kubernetes names and agree with sub (system:serviceaccount:NS:NAME).
func ParseClaims(payload []byte) (*Claims, error) {
	var raw struct {
		jwt.Claims
		Kubernetes *kubernetesClaim `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, refuse(CheckMalformed, "the service-account token's claims are not valid JSON claims (%s)", joseReason(err))
	}
	k := raw.Kubernetes
	if k == nil || k.ServiceAccount == nil {
		return nil, refuse(CheckServiceAccount, "the token has no kubernetes.io service account claim: it is not a Kubernetes service-account token")
	}
	sa := ServiceAccount{Namespace: k.Namespace, Name: k.ServiceAccount.Name}
	if _, _, err := resource.ParseServiceAccount(sa.String(), false); err != nil {
		return nil, refuse(CheckServiceAccount, "the token's service account %s", err)
	}
	if want := "system:serviceaccount:" + sa.String(); raw.Subject != want {
		return nil, refuse(CheckServiceAccount, "the token's subject %q does not match its service account %s", truncate(raw.Subject), sa)
	}
	if k.Pod != nil {
		sa.PodName, sa.PodUID = k.Pod.Name, k.Pod.UID
	}
	if k.Node != nil {
		sa.NodeName = k.Node.Name
	}
	return &Claims{Claims: raw.Claims, ServiceAccount: sa}, nil
}

// check applies the issuer, audience, time and lifetime checks.
func (c *Claims) check(issuer, audience string, now time.Time) error {
	err := c.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: now}, Leeway)
	switch {
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return refuse(CheckIssuer, "the token's issuer is %q, not %q: check the join token's issuer against kubectl get --raw /.well-known/openid-configuration", truncate(c.Issuer), issuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return refuse(CheckAudience, "the token's audience is %s, not %s: set audience: %s in the projected service-account token volume", audienceList(c.Audience), audience, audience)
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return refuse(CheckNotYetValid, "the token is not valid yet: check the clocks of the cluster and the auth service")
	case errors.Is(err, jwt.ErrExpired):
		return refuse(CheckExpired, "the token expired at %s: the agent reads the projected token afresh, so check that the kubelet is refreshing it", c.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return refuse(CheckMalformed, "the token's claims do not check out (%s)", joseReason(err))
	}
	if c.Expiry == nil || c.IssuedAt == nil {
		return refuse(CheckLifetime, "the token has no expiry or issue time: use a projected service-account token (expirationSeconds of %d or more), not a legacy secret-based one", int(MinLifetime/time.Second))
	}
	if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life < MinLifetime {
		return refuse(CheckLifetime, "the token lives %s, less than the %s that Kubernetes gives projected tokens: set expirationSeconds to %d or more", life, MinLifetime, int(MinLifetime/time.Second))
	}
	return nil
}

func audienceList(a jwt.Audience) string {
	if len(a) == 0 {
		return "empty"
	}
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = fmt.Sprintf("%q", truncate(s))
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// truncate keeps untrusted claim values short in messages.
func truncate(s string) string {
	const max = 100
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
