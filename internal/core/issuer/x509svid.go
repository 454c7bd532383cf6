package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/ca"
)

// X509Params is an authorised X509-SVID request.
type X509Params struct {
	ID        spiffeid.ID
	PublicKey crypto.PublicKey
	// TTL is the SVID's life; 0 means DefaultX509TTL. The SVID never
	// outlives the CA certificate that signs it.
	TTL     time.Duration
	DNSSANs []string
	IPSANs  []net.IP
}

// X509SVID is a signed X509-SVID.
type X509SVID struct {
	// Certificates is the chain, leaf first, then the intermediates when
	// the spiffe CA sits under an upstream CA (roots are left out).
	Certificates []*x509.Certificate
	// Serial is the leaf's serial number, 32 lower-case hex digits.
	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
}

// SignX509SVID signs an X509-SVID for p.ID with the active spiffe CA key:
// exactly one URI SAN, CA false, key usage digitalSignature (and
// keyEncipherment for RSA keys), EKU serverAuth and clientAuth, a 128-bit
// random serial.
func (i *Issuer) SignX509SVID(p X509Params) (*X509SVID, error) {
	if err := i.checkSVIDID(p.ID); err != nil {
		return nil, err
	}
	return i.signX509SVID(p)
}

// SignBundleEndpointSVID signs the X509-SVID the bundle endpoint serves
// with (https_spiffe): spiffe://<td>/_wid/bundle-endpoint, under the path
// that no workload or user may be issued.
func (i *Issuer) SignBundleEndpointSVID(pub crypto.PublicKey, ttl time.Duration) (*X509SVID, error) {
	id, err := spiffeid.FromPath(i.cas.TrustDomain(), BundleEndpointPath)
	if err != nil {
		return nil, err
	}
	return i.signX509SVID(X509Params{ID: id, PublicKey: pub, TTL: ttl})
}

// BundleEndpointPath is the path of the bundle endpoint's SPIFFE ID.
const BundleEndpointPath = ReservedPath + "/bundle-endpoint"

func (i *Issuer) signX509SVID(p X509Params) (*X509SVID, error) {
	if err := checkPublicKey(p.PublicKey); err != nil {
		return nil, err
	}
	ttl, err := svidTTL(p.TTL, DefaultX509TTL)
	if err != nil {
		return nil, err
	}
	if err := checkSANs(p.DNSSANs, p.IPSANs); err != nil {
		return nil, err
	}
	ks, tmpl, err := i.leaf(ca.TypeSPIFFE, ttl, p.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl.Subject = pkix.Name{Organization: []string{i.cas.TrustDomain().Name()}}
	// Some TLS stacks still look at the CN; X.520 caps it at 64 characters.
	if len(p.DNSSANs) > 0 && len(p.DNSSANs[0]) <= 64 {
		tmpl.Subject.CommonName = p.DNSSANs[0]
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.URIs = []*url.URL{p.ID.URL()}
	tmpl.DNSNames, tmpl.IPAddresses = p.DNSSANs, p.IPSANs
	leaf, err := sign(tmpl, ks, p.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signing X509-SVID for %s: %w", p.ID, err)
	}
	chain := []*x509.Certificate{leaf}
	if len(ks.Roots) > 0 {
		// Under an upstream CA verifiers hold only the root: the chain
		// carries wid's intermediate and any upstream intermediates.
		chain = append(append(chain, ks.Cert), ks.Chain...)
	}
	return &X509SVID{
		Certificates: chain,
		Serial:       serialHex(leaf.SerialNumber),
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
	}, nil
}

// leaf is the signer of CA t and the parts of a leaf certificate template
// that do not depend on what it is for: a random serial, a validity of ttl
// within the CA's, the key usage that pub allows, not a CA, and the key IDs.
func (i *Issuer) leaf(t ca.Type, ttl time.Duration, pub crypto.PublicKey) (*ca.KeySet, *x509.Certificate, error) {
	ks, err := i.cas.Signer(t)
	if err != nil {
		return nil, nil, fmt.Errorf("getting the %s CA: %w", t, err)
	}
	notBefore, notAfter, err := validity(i.clock(), ttl, ks)
	if err != nil {
		return nil, nil, err
	}
	serial, err := ca.RandomSerial()
	if err != nil {
		return nil, nil, err
	}
	skid, err := ca.SubjectKeyID(pub)
	if err != nil {
		return nil, nil, err
	}
	return ks, &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              keyUsage(pub),
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		AuthorityKeyId:        ks.Cert.SubjectKeyId,
	}, nil
}

func sign(tmpl *x509.Certificate, ks *ca.KeySet, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ks.Cert, pub, ks.Signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// checkSANs checks the form of DNS and IP SANs; whether the caller may have
// them is the caller's business.
func checkSANs(dnsNames []string, ips []net.IP) error {
	for _, name := range dnsNames {
		if err := checkDNSName(name); err != nil {
			return err
		}
	}
	for _, ip := range ips {
		if ip.To4() == nil && ip.To16() == nil {
			return fmt.Errorf("IP SAN %q is not an IPv4 or IPv6 address", ip.String())
		}
	}
	return nil
}

// checkDNSName accepts host names and a leading "*." wildcard label.
func checkDNSName(name string) error {
	if name == "" {
		return errors.New("DNS SAN is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("DNS SAN %q is longer than 253 characters", name)
	}
	labels := strings.Split(name, ".")
	for n, label := range labels {
		if n == 0 && label == "*" && len(labels) > 1 {
			continue
		}
		if !validLabel(label) {
			return fmt.Errorf("DNS SAN %q is not a valid DNS name: labels are 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen", name)
		}
	}
	return nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range []byte(l) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
