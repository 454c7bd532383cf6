package resource

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// KubernetesJoin configures a join token of the kubernetes method: which
// service accounts may join, and how their tokens are checked. Exactly one
// way of checking is set: the cluster's OIDC issuer keys (Issuer with JWKS,
// or with a Cluster whose jwks_url the auth service fetches), or the
// TokenReview API (TokenReview, of Cluster or the auth service's own).
//
// A token names no file and no URL: what the auth service reads on its host
// and which servers it calls (with what credentials) is its own
// configuration (kubernetes_clusters of widagent's config), never a
// resource that a role allowed to write tokens could set.
type KubernetesJoin struct {
	// Allow lists the service accounts that may join as the token's bot.
	Allow []KubernetesAllow `json:"allow" yaml:"allow"`

	// Cluster names a cluster of the auth service's configuration, whose
	// API server (TokenReview) or JWKS URL checks the tokens.
	Cluster string `json:"cluster,omitempty" yaml:"cluster,omitempty"`

	// Issuer is the cluster's service-account issuer (the iss claim),
	// e.g. https://kubernetes.default.svc.cluster.local.
	Issuer string `json:"issuer,omitempty" yaml:"issuer,omitempty"`
	// JWKS holds the issuer's public keys as a JSON Web Key Set, as
	// `kubectl get --raw /openid/v1/jwks` prints them.
	JWKS string `json:"jwks,omitempty" yaml:"jwks,omitempty"`

	// TokenReview asks the cluster's TokenReview API about each token:
	// Cluster's, or by default that of the cluster the auth service runs in.
	TokenReview bool `json:"token_review,omitempty" yaml:"token_review,omitempty"`

	// Fields of earlier versions, read only to refuse them with a sentence
	// that says where they went.
	JWKSURL   string `json:"jwks_url,omitempty" yaml:"jwks_url,omitempty"`
	APIServer string `json:"api_server,omitempty" yaml:"api_server,omitempty"`
	CAFile    string `json:"ca_file,omitempty" yaml:"ca_file,omitempty"`
	TokenFile string `json:"token_file,omitempty" yaml:"token_file,omitempty"`
}

// KubernetesAllow admits one service account, or every one in a namespace.
type KubernetesAllow struct {
	// ServiceAccount is "namespace:name"; name may be * for any.
	ServiceAccount string `json:"service_account" yaml:"service_account"`
}

// Kubernetes object names: a namespace is a DNS-1123 label, a service
// account a DNS-1123 subdomain.
var (
	k8sLabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	k8sSubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ParseServiceAccount splits "namespace:name" and checks both parts as
// Kubernetes checks them. With wildcard, name may be "*".
func ParseServiceAccount(s string, wildcard bool) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("%s is not namespace:name: write it as, for example, wid:wid-agent", quote(s))
	}
	if len(namespace) > 63 || !k8sLabelRE.MatchString(namespace) {
		return "", "", fmt.Errorf("%s has no valid namespace: a namespace is 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit", quote(s))
	}
	if wildcard && name == Wildcard {
		return namespace, name, nil
	}
	if len(name) > 253 || !k8sSubdomainRE.MatchString(name) {
		msg := "a service account name is 1-253 lower-case letters, digits, '-' or '.'"
		if wildcard {
			msg += ", or * for every service account of the namespace"
		}
		return "", "", fmt.Errorf("%s has no valid service account name: %s", quote(s), msg)
	}
	return namespace, name, nil
}

// Allows reports whether k admits the service account name in namespace.
func (k *KubernetesJoin) Allows(namespace, name string) bool {
	for _, a := range k.Allow {
		ns, n, err := ParseServiceAccount(a.ServiceAccount, true)
		if err != nil {
			continue
		}
		if ns == namespace && (n == Wildcard || n == name) {
			return true
		}
	}
	return false
}

// ParseJWKS reads a JSON Web Key Set of public keys.
func ParseJWKS(s string) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(s), &set); err != nil {
		return nil, fmt.Errorf("is not a JSON Web Key Set (%v): paste what kubectl get --raw /openid/v1/jwks prints", err)
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("holds no keys: paste what kubectl get --raw /openid/v1/jwks prints")
	}
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("key %d (kid %s) is a private key: give only the issuer's public keys", i+1, quote(k.KeyID))
		}
		if !k.Valid() {
			return nil, fmt.Errorf("key %d (kid %s) is not a valid key", i+1, quote(k.KeyID))
		}
	}
	return &set, nil
}

func (k *KubernetesJoin) validate(res string) error {
	const f = "spec.kubernetes"
	if len(k.Allow) == 0 {
		return fieldErrorf(res, f+".allow", "is empty: list the service accounts that may join, e.g. [{service_account: \"wid:wid-agent\"}]")
	}
	for i, a := range k.Allow {
		if _, _, err := ParseServiceAccount(a.ServiceAccount, true); err != nil {
			ff := fmt.Sprintf("%s.allow[%d].service_account", f, i+1)
			return &FieldError{Resource: res, Field: ff, Message: ff + " " + err.Error()}
		}
	}
	for _, p := range []struct{ field, value string }{
		{"jwks_url", k.JWKSURL}, {"api_server", k.APIServer}, {"ca_file", k.CAFile}, {"token_file", k.TokenFile},
	} {
		if p.value != "" {
			return fieldErrorf(res, f+"."+p.field, "is no longer a join token field: files the auth service reads and servers it calls are set in its own configuration (kubernetes_clusters in widagent's config file), and the token names one with cluster: NAME")
		}
	}
	if k.Cluster != "" {
		if err := ValidateName(k.Cluster); err != nil {
			return fieldErrorf(res, f+".cluster", "%s is not a cluster name: use the name of one of the auth service's kubernetes_clusters", quote(k.Cluster))
		}
	}
	switch {
	case k.TokenReview && (k.JWKS != "" || k.Issuer != ""):
		return fieldErrorf(res, f, "sets both token_review and issuer keys (issuer, jwks): choose one way to check service-account tokens")
	case !k.TokenReview && k.JWKS == "" && k.Cluster == "":
		return fieldErrorf(res, f, "says no way to check service-account tokens: set issuer with jwks (the cluster's OIDC issuer keys) or with cluster (whose jwks_url the auth service fetches), or token_review: true")
	case k.JWKS != "" && k.Cluster != "":
		return fieldErrorf(res, f+".jwks", "is set along with cluster: give the keys, or the cluster whose keys the auth service fetches, not both")
	case !k.TokenReview && k.Issuer == "":
		return fieldErrorf(res, f+".issuer", "is missing: set the cluster's service-account issuer (kubectl get --raw /.well-known/openid-configuration shows it)")
	}
	if k.Issuer != "" && strings.TrimSpace(k.Issuer) != k.Issuer {
		return fieldErrorf(res, f+".issuer", "%s has spaces around it: remove them", quote(k.Issuer))
	}
	if k.JWKS != "" {
		if _, err := ParseJWKS(k.JWKS); err != nil {
			return fieldErrorf(res, f+".jwks", "%s", err)
		}
	}
	return nil
}

// HTTPSURL checks an https URL without credentials in it.
func HTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("is not an https URL: write it as https://host/path")
	}
	if u.User != nil {
		return fmt.Errorf("holds credentials: put the bearer token in a token_file instead")
	}
	return nil
}
