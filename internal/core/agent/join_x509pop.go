package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/x509pop"
)

// JoinMethodX509Pop joins with a certificate from the operator's CA and
// proof of possession of its key.
const JoinMethodX509Pop = "x509pop"

// maxPEMFile bounds the certificate and key files: a chain of a few
// certificates, or one key.
const maxPEMFile = 256 << 10

// x509PopCredential is the agent's certificate chain and its key.
type x509PopCredential struct {
	chain []*x509.Certificate
	key   crypto.Signer
}

// loadX509PopCredential reads certFile (PEM: the certificate, then any
// intermediates) and keyFile (PEM: PKCS #8, SEC 1 or PKCS #1), and checks
// that the key is the certificate's.
func loadX509PopCredential(certFile, keyFile string) (*x509PopCredential, error) {
	certPEM, err := readPEMFile(certFile, "certificate")
	if err != nil {
		return nil, err
	}
	var cred x509PopCredential
	for rest := certPEM; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the certificate file %s: certificate %d does not parse: %v", certFile, len(cred.chain)+1, err)
		}
		cred.chain = append(cred.chain, c)
	}
	if len(cred.chain) == 0 {
		return nil, fmt.Errorf("the certificate file %s holds no PEM certificate: give the machine's certificate with --cert", certFile)
	}
	keyPEM, err := readPEMFile(keyFile, "key")
	if err != nil {
		return nil, err
	}
	defer clear(keyPEM)
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil, fmt.Errorf("the key file %s holds no PEM key: give the certificate's private key with --key", keyFile)
	}
	defer clear(blk.Bytes)
	var k any
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("the key file %s does not hold a private key wid can read (PKCS #8, EC or RSA PEM): %v", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the key file %s holds a %T, which cannot sign", keyFile, k)
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("the key file %s: %v", keyFile, err)
	}
	if !bytes.Equal(pub, cred.chain[0].RawSubjectPublicKeyInfo) {
		return nil, fmt.Errorf("the key in %s does not match the certificate in %s: give the certificate's own key", keyFile, certFile)
	}
	cred.key = signer
	return &cred, nil
}

func readPEMFile(path, what string) ([]byte, error) {
	if path == "" {
		flag := "--cert"
		if what == "key" {
			flag = "--key"
		}
		return nil, fmt.Errorf("the x509pop join method needs the machine's %s: pass %s FILE", what, flag)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the %s file: %w", what, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading the %s file %s: %w", what, path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("the %s file %s is larger than %d bytes: it holds more than a %s", what, path, maxPEMFile, what)
	}
	return b, nil
}

// signX509PopJoin asks the auth service for a challenge and fills req with
// the certificate chain and the challenge signed with the certificate's key.
func signX509PopJoin(ctx context.Context, c *client.Client, cred *x509PopCredential, req *authv1.JoinRequest) error {
	resp, err := c.JoinChallenge(ctx, &authv1.JoinChallengeRequest{Token: req.Token})
	if err != nil {
		return fmt.Errorf("asking the auth service for an x509pop challenge: %w", err)
	}
	if len(resp.Challenge) != x509pop.ChallengeLen {
		return errors.New("the auth service's x509pop challenge is malformed")
	}
	sig, err := x509pop.Sign(cred.key, x509pop.Message(resp.Challenge, req.Csr))
	if err != nil {
		return err
	}
	req.JoinMethod = JoinMethodX509Pop
	req.Challenge, req.ChallengeSignature = resp.Challenge, sig
	for _, cert := range cred.chain {
		req.X509Chain = append(req.X509Chain, cert.Raw)
	}
	return nil
}
