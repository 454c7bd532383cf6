package issuer

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
)

// Kinds of internal certificate holders.
const (
	KindUser   = "user"
	KindBot    = "bot"
	KindServer = "server"
)

// InternalParams is a request for one of wid's own mTLS certificates.
type InternalParams struct {
	// CA is the signing CA: user for users, user or host for bots, host for
	// servers.
	CA        ca.Type
	PublicKey crypto.PublicKey
	// TTL is the certificate's life; 0 means DefaultInternalTTL. It never
	// outlives the signing CA certificate.
	TTL time.Duration
	// Kind is KindUser, KindBot or KindServer.
	Kind string
	// Name is the user, bot or server name: one SPIFFE path segment.
	Name string
	// DNSNames and IPs are for server certificates only.
	DNSNames []string
	IPs      []net.IP
	// Generation names the incarnation of the user or bot that the
	// certificate is for, so that one issued before a reset or a removal
	// and re-creation stops working; see GenerationFromCert.
	Generation string
	// Host is, for a bot, the host its join attested (the x509pop
	// certificate's, the kubernetes node, or the one named with the token).
	// It travels with the certificate, so that host locks hold on each
	// agent of a bot by its own host, on every replica and after restarts;
	// see HostFromCert.
	Host string
}

// oidHost is the COSINE "host" attribute (RFC 1274): the host a bot's
// certificate was issued for, in its subject.
var oidHost = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 9}

// MaxHostLength bounds the host a certificate carries, as DNS bounds names.
const MaxHostLength = 253

// allowedCAs says which CA may sign each kind. Servers only get host
// certificates and users only user certificates, so that a certificate from
// one side cannot pose as the other.
var allowedCAs = map[string][]ca.Type{
	KindUser:   {ca.TypeUser},
	KindBot:    {ca.TypeUser, ca.TypeHost},
	KindServer: {ca.TypeHost},
}

// SignInternalCert signs a client certificate for a user or bot, or a server
// certificate, for wid's own mTLS. The holder's kind and name are in the
// subject (OU and CN) and in a URI SAN spiffe://<td>/_wid/<kind>/<name>,
// which IdentityFromCert reads back.
func (i *Issuer) SignInternalCert(p InternalParams) (*x509.Certificate, error) {
	cas, ok := allowedCAs[p.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown certificate kind %q: use user, bot or server", p.Kind)
	}
	if !slices.Contains(cas, p.CA) {
		return nil, fmt.Errorf("a %s certificate cannot come from the %q CA", p.Kind, p.CA)
	}
	if p.Name == "" {
		return nil, fmt.Errorf("a %s certificate needs a name", p.Kind)
	}
	id, err := spiffeid.FromSegments(i.cas.TrustDomain(), ReservedPath[1:], p.Kind, p.Name)
	if err != nil {
		return nil, fmt.Errorf("invalid %s name %q: %w", p.Kind, p.Name, err)
	}
	if err := checkPublicKey(p.PublicKey); err != nil {
		return nil, err
	}
	ttl := p.TTL
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("TTL %s is negative", ttl)
	case ttl == 0:
		ttl = DefaultInternalTTL
	}
	if p.Host != "" && (p.Kind != KindBot || len(p.Host) > MaxHostLength) {
		return nil, fmt.Errorf("a host of %d bytes cannot go in a %s certificate: only bots have one, of at most %d bytes", len(p.Host), p.Kind, MaxHostLength)
	}
	var eku []x509.ExtKeyUsage
	if p.Kind == KindServer {
		if len(p.DNSNames) == 0 && len(p.IPs) == 0 {
			return nil, errors.New("a server certificate needs at least one DNS name or IP address")
		}
		if err := checkSANs(p.DNSNames, p.IPs); err != nil {
			return nil, err
		}
		// Server only: a server certificate must not be usable to log in.
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		if len(p.DNSNames) > 0 || len(p.IPs) > 0 {
			return nil, fmt.Errorf("a %s certificate cannot hold DNS names or IP addresses", p.Kind)
		}
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}

	ks, tmpl, err := i.leaf(p.CA, ttl, p.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl.Subject = pkix.Name{
		Organization:       []string{i.cas.TrustDomain().Name()},
		OrganizationalUnit: []string{p.Kind},
		CommonName:         p.Name,
		// The subject's serialNumber attribute tells apart entities
		// of the same name, which is what a generation is.
		SerialNumber: p.Generation,
		ExtraNames:   hostAttribute(p.Host),
	}
	tmpl.ExtKeyUsage = eku
	tmpl.URIs = []*url.URL{id.URL()}
	tmpl.DNSNames, tmpl.IPAddresses = p.DNSNames, p.IPs
	cert, err := sign(tmpl, ks, p.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signing %s certificate for %s: %w", p.Kind, p.Name, err)
	}
	return cert, nil
}

// IdentityFromCert returns the kind and name of the holder of an internal
// certificate. It reads the certificate only: call it after TLS has verified
// the chain against the user or host CA pool, which is what makes the answer
// true.
func IdentityFromCert(cert *x509.Certificate) (kind, name string, err error) {
	if cert == nil {
		return "", "", errors.New("no certificate given")
	}
	if len(cert.URIs) != 1 {
		return "", "", fmt.Errorf("certificate has %d URI SANs, want 1", len(cert.URIs))
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return "", "", fmt.Errorf("certificate URI SAN: %w", err)
	}
	segments := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segments) != 3 || "/"+segments[0] != ReservedPath {
		return "", "", fmt.Errorf("certificate names %s, not a wid user, bot or server", id)
	}
	kind, name = segments[1], segments[2]
	if _, ok := allowedCAs[kind]; !ok {
		return "", "", fmt.Errorf("certificate names unknown kind %q", kind)
	}
	// The subject is written from the same request; a difference means the
	// certificate was not made by SignInternalCert.
	if cert.Subject.CommonName != name || !slices.Equal(cert.Subject.OrganizationalUnit, []string{kind}) {
		return "", "", fmt.Errorf("certificate subject does not match its URI SAN %s", id)
	}
	return kind, name, nil
}

func hostAttribute(host string) []pkix.AttributeTypeAndValue {
	if host == "" {
		return nil
	}
	return []pkix.AttributeTypeAndValue{{Type: oidHost, Value: host}}
}

// HostFromCert returns the host SignInternalCert wrote into a bot's
// certificate, or "" for one issued without it.
func HostFromCert(cert *x509.Certificate) string {
	for _, a := range cert.Subject.Names {
		if a.Type.Equal(oidHost) {
			if h, ok := a.Value.(string); ok {
				return h
			}
		}
	}
	return ""
}

// GenerationFromCert returns the holder's generation written by
// SignInternalCert, or "" for a certificate issued without one.
func GenerationFromCert(cert *x509.Certificate) string {
	return cert.Subject.SerialNumber
}
