package auth

import (
	"fmt"
	"time"

	"github.com/wid-project/wid/internal/core/issuer"
)

// maxDefaultSVIDTTL bounds svid_ttl and jwt_svid_ttl: an SVID is meant to
// be short-lived, and a default that outlives the CA could not be met.
const maxDefaultSVIDTTL = 30 * 24 * time.Hour

// validateSettings checks the operator's issuance settings of cfg.
func validateSettings(cfg Config) error {
	if err := cfg.CASubject.Validate(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"svid_ttl", cfg.SVIDTTL}, {"jwt_svid_ttl", cfg.JWTSVIDTTL}} {
		if d.v < 0 {
			return fmt.Errorf("%s %s is negative: give a duration such as 1h, or leave it out for the default", d.name, d.v)
		}
		if d.v > 0 && d.v < time.Second {
			return fmt.Errorf("%s %s is under a second: give at least 1s", d.name, d.v)
		}
		if d.v > maxDefaultSVIDTTL {
			return fmt.Errorf("%s %s is longer than %s: SVIDs are short-lived; give at most 720h", d.name, d.v, maxDefaultSVIDTTL)
		}
	}
	return nil
}

// defaultX509TTL is an X509-SVID's life when the request and its workload
// identity name none: svid_ttl, else issuer.DefaultX509TTL.
func (s *Server) defaultX509TTL() time.Duration {
	if s.cfg.SVIDTTL > 0 {
		return s.cfg.SVIDTTL
	}
	return issuer.DefaultX509TTL
}

// defaultJWTTTL is a JWT-SVID's life when the request and its workload
// identity name none: jwt_svid_ttl, else issuer.DefaultJWTTTL.
func (s *Server) defaultJWTTTL() time.Duration {
	if s.cfg.JWTSVIDTTL > 0 {
		return s.cfg.JWTSVIDTTL
	}
	return issuer.DefaultJWTTTL
}
