package kubejoin

import (
	"fmt"
	"path/filepath"

	"github.com/wid-project/wid/internal/core/resource"
)

// Cluster is a Kubernetes cluster in the auth service's own configuration:
// where its API server and issuer keys are, and the files on the auth
// service's host that verify them and authenticate to them. Join tokens
// name a cluster; they never hold these, so that writing a token cannot
// make the auth service read a file or call a server of the writer's choice.
type Cluster struct {
	Name string `json:"name" yaml:"name"`
	// APIServer is the Kubernetes API's https URL, for TokenReview.
	APIServer string `json:"api_server,omitempty" yaml:"api_server,omitempty"`
	// JWKSURL is where the cluster's service-account issuer publishes its
	// keys, e.g. https://kubernetes.default.svc/openid/v1/jwks.
	JWKSURL string `json:"jwks_url,omitempty" yaml:"jwks_url,omitempty"`
	// CAFile verifies the API server or the JWKS URL; the system roots by default.
	CAFile string `json:"ca_file,omitempty" yaml:"ca_file,omitempty"`
	// TokenFile holds the bearer token sent to the API server or the JWKS
	// URL, read afresh on every request.
	TokenFile string `json:"token_file,omitempty" yaml:"token_file,omitempty"`
}

// ValidateClusters checks the auth service's kubernetes_clusters: unique
// names, https URLs, absolute paths.
func ValidateClusters(clusters []Cluster) error {
	seen := map[string]bool{}
	for i, c := range clusters {
		where := fmt.Sprintf("kubernetes_clusters[%d]", i+1)
		if err := resource.ValidateName(c.Name); err != nil {
			return fmt.Errorf("%s.name %q is not a valid name: use lower-case letters, digits and '-', like main", where, c.Name)
		}
		where = fmt.Sprintf("kubernetes cluster %s", c.Name)
		if seen[c.Name] {
			return fmt.Errorf("%s is defined twice: keep one", where)
		}
		seen[c.Name] = true
		if c.APIServer == "" && c.JWKSURL == "" {
			return fmt.Errorf("%s has neither api_server nor jwks_url: set api_server for token_review, jwks_url for issuer keys", where)
		}
		for _, u := range []struct{ field, value string }{{"api_server", c.APIServer}, {"jwks_url", c.JWKSURL}} {
			if u.value != "" {
				if err := resource.HTTPSURL(u.value); err != nil {
					return fmt.Errorf("%s: %s %q %v", where, u.field, u.value, err)
				}
			}
		}
		for _, p := range []struct{ field, path string }{{"ca_file", c.CAFile}, {"token_file", c.TokenFile}} {
			if p.path != "" && !filepath.IsAbs(p.path) {
				return fmt.Errorf("%s: %s %q is not an absolute path: give the full path on the auth service's host", where, p.field, p.path)
			}
		}
	}
	return nil
}

// cluster finds the cluster a join token names.
func (v *Verifier) cluster(name string) (*Cluster, error) {
	c, ok := v.clusters[name]
	if !ok {
		return nil, fmt.Errorf("the join token names kubernetes cluster %q, which the auth service's configuration does not define: add it under kubernetes_clusters in widagent's config file", name)
	}
	return c, nil
}

// HasCluster reports whether the auth service's configuration defines the
// named cluster.
func (v *Verifier) HasCluster(name string) bool {
	_, ok := v.clusters[name]
	return ok
}
