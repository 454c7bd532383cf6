package kubejoin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/wid-project/wid/internal/core/resource"
)

func getenv(k string) string { return os.Getenv(k) }

// maxBody bounds what we read from a JWKS URL or the API server.
const maxBody = 1 << 20

// keySet is the cached JWKS of one URL.
type keySet struct {
	// mu serializes fetches of this URL: joins that arrive together
	// share one fetch.
	mu        sync.Mutex
	set       *jose.JSONWebKeySet
	fetched   time.Time
	lastFetch time.Time
}

// keys returns the issuer keys that may have signed a token with kid: every
// key when kid is empty, as the JWS spec allows.
func (v *Verifier) keys(ctx context.Context, k *resource.KubernetesJoin, c *Cluster, kid string) ([]jose.JSONWebKey, error) {
	if k.JWKS != "" {
		set, err := resource.ParseJWKS(k.JWKS)
		if err != nil {
			return nil, refuse(CheckKeys, "the join token's jwks %s: replace the token with one whose jwks parses", err)
		}
		return pick(set, kid), nil
	}
	if c == nil || c.JWKSURL == "" {
		return nil, fmt.Errorf("the join token has neither jwks nor a cluster with a jwks_url: give it jwks, or name a cluster of the auth service's kubernetes_clusters that has a jwks_url")
	}
	cacheKey := c.Name
	v.mu.Lock()
	ks := v.sets[cacheKey]
	if ks == nil {
		ks = &keySet{}
		v.sets[cacheKey] = ks
	}
	v.mu.Unlock()

	ks.mu.Lock()
	defer ks.mu.Unlock()
	now := v.clock()
	stale := ks.set == nil || now.Sub(ks.fetched) >= MaxKeysAge
	unknown := ks.set != nil && len(pick(ks.set, kid)) == 0
	mayFetch := ks.lastFetch.IsZero() || now.Sub(ks.lastFetch) >= MinRefetch
	if (stale || unknown) && mayFetch {
		ks.lastFetch = now
		set, err := v.fetchJWKS(ctx, c)
		switch {
		case err == nil:
			ks.set, ks.fetched = set, now
		case ks.set == nil:
			return nil, err
		default:
			// Keys we already have still check tokens they signed.
			v.logger.Warn("refreshing the cluster's issuer keys failed; using the cached ones", "jwks_url", c.JWKSURL, "error", err)
		}
	}
	if ks.set == nil {
		return nil, fmt.Errorf("the cluster's issuer keys at %s could not be fetched recently; retrying in at most %s", c.JWKSURL, MinRefetch)
	}
	return pick(ks.set, kid), nil
}

func pick(set *jose.JSONWebKeySet, kid string) []jose.JSONWebKey {
	if kid == "" {
		return set.Keys
	}
	return set.Key(kid)
}

func (v *Verifier) fetchJWKS(ctx context.Context, k *Cluster) (*jose.JSONWebKeySet, error) {
	hc, err := httpClient(k.CAFile)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.JWKSURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetching the cluster's issuer keys: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	if err := setBearer(req, k.TokenFile); err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the cluster's issuer keys from %s: %w", k.JWKSURL, cleanURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's issuer keys from %s: %w", k.JWKSURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the cluster's issuer keys from %s: the server answered %s", k.JWKSURL, resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("the cluster's issuer keys at %s are not a JSON Web Key Set: %s", k.JWKSURL, joseReason(err))
	}
	// Only public keys check signatures; anything else is dropped.
	pub := set.Keys[:0]
	for _, key := range set.Keys {
		if key.IsPublic() && key.Valid() {
			pub = append(pub, key)
		}
	}
	set.Keys = pub
	return &set, nil
}

// httpClient trusts caFile when given, else the system roots.
func httpClient(caFile string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the Kubernetes CA %s: %w", caFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the Kubernetes CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: FetchTimeout}, nil
}

// setBearer reads the bearer token afresh: projected tokens rotate.
func setBearer(req *http.Request, tokenFile string) error {
	if tokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("reading the auth service's Kubernetes token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("the auth service's Kubernetes token file %s is empty", tokenFile)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// cleanURLError drops the method and URL that net/http repeats.
func cleanURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
