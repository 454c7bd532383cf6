package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/wid-project/wid/internal/core/ca"
)

// OIDC discovery lets relying parties that speak OpenID Connect (cloud
// providers' workload identity federation, Vault's JWT auth) validate
// JWT-SVIDs: with an issuer configured, JWT-SVIDs carry it as iss, and
// the bundle endpoint serves the discovery document and the JWKS it names.

// oidcKeysPath is where the JWKS is served, under the issuer's path.
const oidcKeysPath = "/keys"

// checkJWTIssuer checks the --jwt-issuer URL: OIDC requires https, a host,
// and no query or fragment.
func checkJWTIssuer(iss string) error {
	if iss == "" {
		return nil
	}
	u, err := url.Parse(iss)
	if err != nil {
		return fmt.Errorf("the JWT issuer %q is not a URL: %v", iss, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("the JWT issuer %q is not an https URL with a host and no query, fragment or credentials, as OpenID Connect requires: give one such as https://oidc.example.org", iss)
	}
	return nil
}

// addOIDCRoutes serves discovery for the JWT issuer, if there is one.
func (s *Server) addOIDCRoutes(mux *http.ServeMux) error {
	iss := s.cfg.JWTIssuer
	if iss == "" {
		return nil
	}
	u, _ := url.Parse(iss)
	base := strings.TrimSuffix(u.EscapedPath(), "/")
	keys := strings.TrimSuffix(iss, "/") + oidcKeysPath
	mux.HandleFunc("GET "+base+"/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		algs := s.jwtAlgorithms()
		writeJSON(w, map[string]any{
			"issuer":                                iss,
			"jwks_uri":                              keys,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": algs,
		})
	})
	mux.HandleFunc("GET "+base+oidcKeysPath, func(w http.ResponseWriter, _ *http.Request) {
		// use "sig", as relying parties that are not SPIFFE-aware expect.
		data, err := ca.EncodeJWKS(s.cas.JWTKeys(ca.TypeJWT), "sig")
		if err != nil {
			s.log.Error("encoding the JWT keys for OIDC discovery", "error", err)
			http.Error(w, "the JWT keys could not be encoded", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(data)
	})
	return nil
}

// jwtAlgorithms are the algorithms of the trusted JWT keys.
func (s *Server) jwtAlgorithms() []string {
	var algs []string
	for _, k := range s.cas.JWTKeys(ca.TypeJWT) {
		if a, err := ca.JOSEAlgorithm(k); err == nil && !slices.Contains(algs, string(a)) {
			algs = append(algs, string(a))
		}
	}
	if len(algs) == 0 {
		algs = []string{string(jose.ES256)}
	}
	slices.Sort(algs)
	return algs
}

func writeJSON(w http.ResponseWriter, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}
