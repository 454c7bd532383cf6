package resource

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// JoinMethodX509Pop joins an agent that proves possession of the key of a
// certificate issued by the operator's own CA (SPIRE's x509pop).
const JoinMethodX509Pop = "x509pop"

// MaxX509PopBundle bounds a token's CA bundle: a handful of CA
// certificates, and a join token must stay small in every agent's feed.
const MaxX509PopBundle = 64 << 10

// X509PopJoin configures a join token of the x509pop method: the CAs that
// issue the agents' certificates, and which certificates may join.
type X509PopJoin struct {
	// CABundle holds the PEM CA certificates that the agent's certificate
	// must chain to.
	CABundle string `json:"ca_bundle" yaml:"ca_bundle"`
	// Allow lists "cn=VALUE" (the subject's common name) or "san=VALUE"
	// (a DNS name, URI, e-mail address or IP address among its SANs); one
	// match admits. Empty admits every certificate the bundle vouches for.
	Allow []string `json:"allow,omitempty" yaml:"allow,omitempty"`
}

// ParseX509PopBundle reads the CA certificates of a PEM bundle, refusing
// anything that is not a CA certificate.
func ParseX509PopBundle(s string) ([]*x509.Certificate, error) {
	if len(s) > MaxX509PopBundle {
		return nil, fmt.Errorf("is larger than %d bytes: give only the CA certificates that issue the agents' certificates", MaxX509PopBundle)
	}
	var certs []*x509.Certificate
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s block: give only PEM CERTIFICATE blocks", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %v", len(certs)+1, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA certificate: give the CA that issues the agents' certificates", len(certs)+1, c.Subject)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("holds no PEM certificate: give the CA certificates that issue the agents' certificates")
	}
	return certs, nil
}

// ParseX509PopAllow splits an allow entry into its kind (cn or san) and value.
func ParseX509PopAllow(s string) (kind, value string, err error) {
	kind, value, ok := strings.Cut(s, "=")
	if !ok || (kind != "cn" && kind != "san") || value == "" {
		return "", "", fmt.Errorf("%s is not cn=VALUE or san=VALUE", quote(s))
	}
	if len(value) > 1024 {
		return "", "", fmt.Errorf("%s is longer than 1024 characters", quote(s[:32]+"..."))
	}
	return kind, value, nil
}

// Allows reports whether the allow list admits cert.
func (j *X509PopJoin) Allows(cert *x509.Certificate) bool {
	if len(j.Allow) == 0 {
		return true
	}
	for _, a := range j.Allow {
		kind, value, err := ParseX509PopAllow(a)
		if err != nil {
			continue
		}
		switch kind {
		case "cn":
			if cert.Subject.CommonName == value {
				return true
			}
		case "san":
			for _, d := range cert.DNSNames {
				if d == value {
					return true
				}
			}
			for _, e := range cert.EmailAddresses {
				if e == value {
					return true
				}
			}
			for _, u := range cert.URIs {
				if u.String() == value {
					return true
				}
			}
			for _, ip := range cert.IPAddresses {
				if ip.String() == value {
					return true
				}
			}
		}
	}
	return false
}

func (j *X509PopJoin) validate(res string) error {
	const f = "spec.x509pop"
	if _, err := ParseX509PopBundle(j.CABundle); err != nil {
		return fieldErrorf(res, f+".ca_bundle", "%v", err)
	}
	if len(j.Allow) > 256 {
		return fieldErrorf(res, f+".allow", "has %d entries, over the limit of 256", len(j.Allow))
	}
	for i, a := range j.Allow {
		if _, _, err := ParseX509PopAllow(a); err != nil {
			return fieldErrorf(res, fmt.Sprintf("%s.allow[%d]", f, i+1), "%v", err)
		}
	}
	return nil
}

func (t *JoinToken) validateX509Pop(res string) error {
	s := t.Spec
	if s.X509Pop == nil {
		return fieldErrorf(res, "spec.x509pop", "is missing: an x509pop join token needs ca_bundle (the PEM CAs of the agents' certificates)")
	}
	if s.Kubernetes != nil {
		return fieldErrorf(res, "spec.kubernetes", "is only for method %s: remove it", JoinMethodKubernetes)
	}
	if s.SecretHash != "" {
		return fieldErrorf(res, "spec.secret_hash", "is set, but an x509pop join token has no secret: remove it")
	}
	if s.Uses != 0 || s.Used != 0 {
		return fieldErrorf(res, "spec.uses", "is set, but an x509pop join token is reused by every agent whose certificate it admits: remove uses and used")
	}
	return s.X509Pop.validate(res)
}
