package tui

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/ca"
)

// certificateDetail is the details key under which the auth service records
// an X509-SVID's leaf certificate (audit.DetailCertificate; internal/tui
// reads the API, not the core).
const certificateDetail = "certificate"

// certificateLines is the decoded leaf certificate of an X509-SVID event and
// its PEM, for the detail pane; nothing when the event carries none (JWT and
// WIT SVIDs, denials, events logged before certificates were recorded).
func certificateLines(e *authv1.AuditEvent, label, vw int, st styles) []string {
	raw, ok := e.Details[certificateDetail]
	if !ok {
		return nil
	}
	lines := []string{"", st.header.Render("Certificate")}
	der, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return append(lines, st.denied.Render("the recorded certificate is not base64: "+err.Error()))
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return append(lines, st.denied.Render("the recorded certificate does not parse: "+err.Error()))
	}
	var uris, ips []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	sum := sha256.Sum256(c.Raw)
	fields := [][2]string{
		{"subject", c.Subject.String()},
		{"issuer", c.Issuer.String()},
		{"serial", serialHex(c.SerialNumber)},
		{"not before", c.NotBefore.UTC().Format(time.RFC3339)},
		{"not after", c.NotAfter.UTC().Format(time.RFC3339)},
		{"uri sans", strings.Join(uris, ", ")},
		{"dns sans", strings.Join(c.DNSNames, ", ")},
		{"ip sans", strings.Join(ips, ", ")},
		{"public key", publicKeyName(c)},
		{"signature", c.SignatureAlgorithm.String()},
		{"key usage", keyUsage(c)},
		{"ext key usage", extKeyUsage(c)},
		{"is ca", fmt.Sprint(c.IsCA)},
		{"sha256", hex.EncodeToString(sum[:])},
		{"authority key id", hex.EncodeToString(c.AuthorityKeyId)},
	}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		name := f[0]
		for v := []rune(f[1]); len(v) > 0; {
			n := min(len(v), vw)
			lines = append(lines, fmt.Sprintf("  %-*s %s", label-2, name, string(v[:n])))
			v, name = v[n:], ""
		}
	}
	lines = append(lines, "")
	return append(lines, strings.Split(strings.TrimSuffix(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "\n"), "\n")...)
}

func serialHex(n *big.Int) string { return ca.FormatSerial(n) }

func publicKeyName(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return c.PublicKeyAlgorithm.String()
}

func keyUsage(c *x509.Certificate) string {
	var u []string
	for _, k := range []struct {
		bit  x509.KeyUsage
		name string
	}{{x509.KeyUsageDigitalSignature, "digital signature"}, {x509.KeyUsageKeyEncipherment, "key encipherment"},
		{x509.KeyUsageKeyAgreement, "key agreement"}, {x509.KeyUsageCertSign, "cert sign"}, {x509.KeyUsageCRLSign, "crl sign"}} {
		if c.KeyUsage&k.bit != 0 {
			u = append(u, k.name)
		}
	}
	return strings.Join(u, ", ")
}

func extKeyUsage(c *x509.Certificate) string {
	var u []string
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageServerAuth:
			u = append(u, "server auth")
		case x509.ExtKeyUsageClientAuth:
			u = append(u, "client auth")
		}
	}
	return strings.Join(u, ", ")
}
