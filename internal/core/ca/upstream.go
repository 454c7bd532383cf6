package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/wid-project/wid/internal/core/store"
)

// An upstream CA is the operator's own CA above the spiffe CA, as SPIRE's
// UpstreamAuthority with upstream_bundle: the spiffe CA's certificates are
// intermediates signed by it, SVID chains carry them, and the trust bundle
// holds the upstream's root instead. Because every chain ends at the same
// root, replacing the intermediate changes nothing a verifier holds.

// ErrUpstream is wrapped by every refusal of an upstream certificate, key or
// signed CSR: the input is wrong, not the auth service.
var ErrUpstream = errors.New("upstream CA refused")

func upstreamErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUpstream, fmt.Sprintf(format, args...))
}

// Upstream is the upstream CA as stored in the spiffe CA's document.
type Upstream struct {
	// Cert is the upstream CA certificate that signs the intermediates
	// (DER): the one whose key was imported, or the issuer of the last
	// signed intermediate in CSR mode.
	Cert []byte `json:"cert"`
	// Chain holds the certificates between Cert and a root, issuer order,
	// roots left out (DER). SVID chains carry them.
	Chain [][]byte `json:"chain,omitempty"`
	// Roots are the trust anchors the bundle publishes (DER).
	Roots [][]byte `json:"roots"`
	// EncryptedPrivateKey is Cert's PKCS#8 key sealed with the KEK; empty in
	// CSR mode, where the upstream key stays offline and every new
	// intermediate needs the operator's signature.
	EncryptedPrivateKey []byte `json:"encrypted_private_key,omitempty"`
}

// PendingCSR is an intermediate key that waits for the upstream's
// signature (CSR mode).
type PendingCSR struct {
	ID                  string    `json:"id"`
	PublicKey           []byte    `json:"public_key"`
	EncryptedPrivateKey []byte    `json:"encrypted_private_key"`
	CSR                 []byte    `json:"csr"`
	Created             time.Time `json:"created"`
	// Rotation is set when a rotation asked for the key: the signed
	// certificate then starts that rotation (init) instead of replacing
	// the active key.
	Rotation *PendingRotation `json:"rotation,omitempty"`
}

// PendingRotation is the rotation a PendingCSR starts once signed.
type PendingRotation struct {
	Mode        Mode          `json:"mode"`
	GracePeriod time.Duration `json:"grace_period,omitempty"`
	MaxTTL      time.Duration `json:"max_ttl,omitempty"`
}

// UpstreamMode is how the spiffe CA gets its intermediates signed.
type UpstreamMode string

const (
	// UpstreamNone: the spiffe CA is its own self-signed root.
	UpstreamNone UpstreamMode = ""
	// UpstreamKey: wid holds the upstream key and signs new intermediates.
	UpstreamKey UpstreamMode = "key"
	// UpstreamCSR: the upstream key is offline; each intermediate is signed
	// from a CSR by the operator.
	UpstreamCSR UpstreamMode = "csr"
)

// UpstreamMode says how doc's intermediates are signed.
func (d Document) UpstreamMode() UpstreamMode {
	switch {
	case d.Upstream == nil:
		return UpstreamNone
	case len(d.Upstream.EncryptedPrivateKey) > 0:
		return UpstreamKey
	default:
		return UpstreamCSR
	}
}

// upstreamAAD binds the sealed upstream key to the spiffe CA's upstream slot.
var upstreamAAD = []byte("wid/ca/v1\x00spiffe\x00upstream")

func (u *Upstream) validate() error {
	if _, err := x509.ParseCertificate(u.Cert); err != nil {
		return fmt.Errorf("upstream certificate: %w", err)
	}
	if len(u.Roots) == 0 {
		return errors.New("upstream has no root")
	}
	for _, der := range slices.Concat(u.Chain, u.Roots) {
		if _, err := x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("upstream chain: %w", err)
		}
	}
	return nil
}

func (p *PendingCSR) validate() error {
	if p.ID == "" || len(p.PublicKey) == 0 || len(p.EncryptedPrivateKey) == 0 || len(p.CSR) == 0 {
		return errors.New("pending CSR is incomplete")
	}
	if _, err := x509.ParseCertificateRequest(p.CSR); err != nil {
		return fmt.Errorf("pending CSR: %w", err)
	}
	return nil
}

// Limits on what an import may carry: the RPC bounds the bytes, these the
// parsed counts, so that one request cannot make the auth service verify
// an unbounded chain.
const (
	MaxUpstreamPEM   = 64 << 10
	maxUpstreamCerts = 8
)

// ParseCertificatesPEM parses PEM CERTIFICATE blocks; what names the input
// (e.g. "--cert") goes into the error.
func ParseCertificatesPEM(what string, b []byte) ([]*x509.Certificate, error) {
	if len(b) > MaxUpstreamPEM {
		return nil, upstreamErrorf("%s is %d bytes, more than the %d a certificate chain may have", what, len(b), MaxUpstreamPEM)
	}
	var certs []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, upstreamErrorf("%s holds a PEM block of type %q where only CERTIFICATE blocks belong", what, blk.Type)
		}
		if len(certs) == maxUpstreamCerts {
			return nil, upstreamErrorf("%s holds more than %d certificates", what, maxUpstreamCerts)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, upstreamErrorf("%s holds a certificate that does not parse: %v", what, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, upstreamErrorf("%s holds no PEM certificate", what)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, upstreamErrorf("%s has text after its last certificate that is not PEM", what)
	}
	return certs, nil
}

// ParsePrivateKeyPEM parses one PEM private key (PKCS#8, EC or PKCS#1).
func ParsePrivateKeyPEM(what string, b []byte) (crypto.Signer, error) {
	if len(b) > MaxUpstreamPEM {
		return nil, upstreamErrorf("%s is %d bytes, more than the %d a private key may have", what, len(b), MaxUpstreamPEM)
	}
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, upstreamErrorf("%s holds no PEM private key", what)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, upstreamErrorf("%s holds more than one PEM block: give the key alone", what)
	}
	var key any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, upstreamErrorf("%s holds a PEM block of type %q, not an unencrypted PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", what, blk.Type)
	}
	if err != nil {
		// The parser's error says nothing of the key's content.
		return nil, upstreamErrorf("%s holds a private key that does not parse: %v", what, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, upstreamErrorf("%s holds a key of type %T, which cannot sign", what, key)
	}
	return signer, nil
}

// ImportRequest is an upstream CA to put above the spiffe CA.
type ImportRequest struct {
	// Certs is the --cert file: in key mode the upstream CA certificate,
	// in CSR mode the signed intermediate; either followed by its chain.
	Certs []*x509.Certificate
	// Key is the upstream CA's key (key mode); nil in CSR mode.
	Key crypto.Signer
	// Bundle holds the root(s) when Certs does not end in one.
	Bundle []*x509.Certificate
	// MinValidity is the longest life of an SVID the spiffe CA signs: an
	// upstream that expires sooner is refused. MinValidityBy says what
	// sets it, for the error.
	MinValidity   time.Duration
	MinValidityBy string
}

// ImportResult says what an import did.
type ImportResult struct {
	Mode UpstreamMode
	Doc  Document
	// Intermediate is the spiffe CA's new certificate.
	Intermediate *x509.Certificate
	// Roots are the bundle's new X.509 authorities.
	Roots []*x509.Certificate
	// StartedRotation: the new intermediate joined as the new key of a
	// rotation in init (the trust anchors change, or a rotation asked for
	// it); otherwise it signs at once.
	StartedRotation bool
	// ForRotation: the signed certificate was the one a rotation waited for.
	ForRotation bool
	// CappedAt is set when the intermediate ends early, at the upstream
	// chain's end, instead of after the CA TTL.
	CappedAt time.Time
	// Replaced is the fingerprint of the key set that signed before.
	Replaced string
}

// ImportUpstream puts an upstream CA above the spiffe CA, in one store
// write (the upstream chain, its sealed key and the new intermediate
// together), and reloads. Every refusal of the input wraps ErrUpstream and
// changes nothing.
func (m *Manager) ImportUpstream(ctx context.Context, req ImportRequest) (ImportResult, error) {
	item, err := m.backend.Get(ctx, StoreKind, string(TypeSPIFFE))
	if err != nil {
		return ImportResult{}, fmt.Errorf("reading the spiffe CA: %w", err)
	}
	doc, err := DecodeDocument(item)
	if err != nil {
		return ImportResult{}, err
	}
	next, res, err := m.importDocument(doc, req)
	if err != nil {
		return ImportResult{}, err
	}
	newItem, err := next.Item()
	if err != nil {
		return ImportResult{}, err
	}
	if _, err := m.backend.Apply(ctx, store.Op{Type: store.OpUpdate, Item: newItem, ExpectRevision: item.Revision}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return ImportResult{}, movedErrorf("the spiffe CA changed while the upstream CA was being imported: look at it again (widctl ca status) and retry")
		}
		return ImportResult{}, fmt.Errorf("storing the spiffe CA: %w", err)
	}
	if err := m.Reload(ctx); err != nil {
		return ImportResult{}, fmt.Errorf("the upstream CA is stored but reloading the CAs failed: %w", err)
	}
	res.Doc = next
	return res, nil
}

// chainInfo is a checked path from a CA certificate to a root.
type chainInfo struct {
	// above holds the certificates between the checked one and the root,
	// issuer first, root left out.
	above    []*x509.Certificate
	roots    []*x509.Certificate
	notAfter time.Time
}

// checkChain checks that c (a CA certificate) chains to a root in certs or
// bundle and that every certificate of the path is valid long enough and
// for this trust domain. what names c in errors.
func (m *Manager) checkChain(what string, c *x509.Certificate, rest, bundle []*x509.Certificate, req ImportRequest, now time.Time) (chainInfo, error) {
	if !c.BasicConstraintsValid || !c.IsCA {
		return chainInfo{}, upstreamErrorf("%s (%s) is not a CA certificate: its basic constraints say CA false", what, c.Subject)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return chainInfo{}, upstreamErrorf("%s (%s) lacks the keyCertSign key usage, so it may not sign certificates", what, c.Subject)
	}
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	var rootList []*x509.Certificate
	addRoot := func(r *x509.Certificate) error {
		if !r.BasicConstraintsValid || !r.IsCA {
			return upstreamErrorf("the root %s is not a CA certificate: its basic constraints say CA false", r.Subject)
		}
		if !slices.ContainsFunc(rootList, func(x *x509.Certificate) bool { return x.Equal(r) }) {
			rootList = append(rootList, r)
			roots.AddCert(r)
		}
		return nil
	}
	for _, b := range bundle {
		if err := addRoot(b); err != nil {
			return chainInfo{}, err
		}
	}
	for _, r := range slices.Concat([]*x509.Certificate{c}, rest) {
		if selfSigned(r) {
			if err := addRoot(r); err != nil {
				return chainInfo{}, err
			}
		} else if r != c {
			inter.AddCert(r)
		}
	}
	if len(rootList) == 0 {
		return chainInfo{}, upstreamErrorf("%s (%s) is not self-signed and neither the file nor --bundle holds its root: give the root with --bundle root.pem", what, c.Subject)
	}
	for _, x := range slices.Concat([]*x509.Certificate{c}, rest, bundle) {
		if err := m.checkTrustDomain(what, x); err != nil {
			return chainInfo{}, err
		}
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		// Validity first: it is the commonest reason and deserves its own words.
		for _, x := range slices.Concat([]*x509.Certificate{c}, rest, bundle) {
			if err := checkValidityNow(what, x, now); err != nil {
				return chainInfo{}, err
			}
		}
		return chainInfo{}, upstreamErrorf("%s (%s) does not chain to the root given: %v", what, c.Subject, err)
	}
	path := chains[0]
	info := chainInfo{roots: rootList, notAfter: path[0].NotAfter}
	for _, x := range path {
		if x.NotAfter.Before(info.notAfter) {
			info.notAfter = x.NotAfter
		}
	}
	if len(path) > 2 {
		info.above = slices.Clone(path[1 : len(path)-1])
	}
	if need := now.Add(req.MinValidity); info.notAfter.Before(need) {
		by := req.MinValidityBy
		if by == "" {
			by = "the longest SVID life"
		}
		return chainInfo{}, upstreamErrorf("%s (%s) or its chain expires at %s, before the SVIDs it would sign (%s allows %s): use a certificate valid past %s",
			what, c.Subject, info.notAfter.UTC().Format(time.RFC3339), by, req.MinValidity, need.UTC().Format(time.RFC3339))
	}
	return info, nil
}

func checkValidityNow(what string, c *x509.Certificate, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return upstreamErrorf("%s: the certificate %s expired at %s", what, c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return upstreamErrorf("%s: the certificate %s is not valid before %s", what, c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// checkTrustDomain refuses a certificate whose SPIFFE URI SAN names
// another trust domain: its SVIDs would not be this trust domain's.
func (m *Manager) checkTrustDomain(what string, c *x509.Certificate) error {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return upstreamErrorf("%s: the certificate %s has a URI SAN %q that is not a valid SPIFFE ID", what, c.Subject, u.String())
		}
		if id.TrustDomain() != m.td {
			return upstreamErrorf("%s: the certificate %s is for trust domain %q, not %q", what, c.Subject, id.TrustDomain().Name(), m.td.Name())
		}
	}
	return nil
}

func (m *Manager) importDocument(doc Document, req ImportRequest) (Document, ImportResult, error) {
	now := m.clock().UTC()
	if len(req.Certs) == 0 {
		return Document{}, ImportResult{}, upstreamErrorf("--cert holds no certificate")
	}
	if doc.Type != TypeSPIFFE {
		return Document{}, ImportResult{}, upstreamErrorf("only the spiffe CA can have an upstream CA")
	}
	var (
		ks       KeySetDocument
		upstream Upstream
		res      ImportResult
		pending  *PendingCSR
	)
	if req.Key != nil {
		up := req.Certs[0]
		info, err := m.checkChain("the upstream certificate", up, req.Certs[1:], req.Bundle, req, now)
		if err != nil {
			return Document{}, ImportResult{}, err
		}
		if !samePublicKey(req.Key.Public(), up.PublicKey) {
			return Document{}, ImportResult{}, upstreamErrorf("the key does not match the upstream certificate (%s): give the private key of that certificate", up.Subject)
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(req.Key)
		if err != nil {
			return Document{}, ImportResult{}, upstreamErrorf("the upstream key cannot be stored: %v", err)
		}
		defer clear(pkcs8)
		sealed, err := m.kek.Seal(pkcs8, upstreamAAD)
		if err != nil {
			return Document{}, ImportResult{}, fmt.Errorf("sealing the upstream CA key: %w", err)
		}
		upstream = Upstream{Cert: up.Raw, Roots: derList(info.roots), EncryptedPrivateKey: sealed}
		if !selfSigned(up) {
			upstream.Chain = derList(info.above)
		}
		ks, res.CappedAt, err = m.signIntermediate(upstream, req.Key, now, KeyActive)
		if err != nil {
			return Document{}, ImportResult{}, err
		}
		res.Mode = UpstreamKey
	} else {
		pending = doc.PendingCSR
		if pending == nil {
			return Document{}, ImportResult{}, upstreamErrorf("no CSR waits for a signature: run widctl ca csr --type spiffe first, or give the upstream key with --key")
		}
		signed := req.Certs[0]
		pub, err := x509.ParsePKIXPublicKey(pending.PublicKey)
		if err != nil {
			return Document{}, ImportResult{}, fmt.Errorf("parsing the pending key: %w", err)
		}
		if !samePublicKey(signed.PublicKey, pub) {
			return Document{}, ImportResult{}, upstreamErrorf("the signed certificate (%s) is not for the key of the CSR wid made (%s): sign the CSR that widctl ca csr --type spiffe prints", signed.Subject, Fingerprint(pending.PublicKey))
		}
		info, err := m.checkChain("the signed certificate", signed, req.Certs[1:], req.Bundle, req, now)
		if err != nil {
			return Document{}, ImportResult{}, err
		}
		if selfSigned(signed) {
			return Document{}, ImportResult{}, upstreamErrorf("the signed certificate (%s) is self-signed: sign the CSR with the upstream CA's key", signed.Subject)
		}
		issuer := info.roots[0]
		if len(info.above) > 0 {
			issuer = info.above[0]
		}
		for _, r := range info.roots {
			if bytes.Equal(signed.RawIssuer, r.RawSubject) {
				issuer = r
			}
		}
		upstream = Upstream{Cert: issuer.Raw, Roots: derList(info.roots)}
		if len(info.above) > 0 {
			upstream.Chain = derList(info.above[1:])
		}
		ks = KeySetDocument{
			ID: pending.ID, State: KeyActive, Algorithm: AlgorithmECDSAP256, Cert: signed.Raw,
			Chain: derList(info.above), Roots: derList(info.roots), PublicKey: pending.PublicKey,
			EncryptedPrivateKey: pending.EncryptedPrivateKey,
			NotBefore:           signed.NotBefore.UTC(), NotAfter: signed.NotAfter.UTC(), Created: now,
		}
		res.Mode = UpstreamCSR
	}
	if err := verifyIntermediate(ks, now); err != nil {
		return Document{}, ImportResult{}, err
	}
	if doc.Phase != PhaseStandby {
		return Document{}, ImportResult{}, transitionErrorf("the spiffe CA is in %s of a rotation: finish it (widctl ca rotate --type spiffe --phase %s) or roll it back before importing an upstream CA", doc.Phase, NextPhase(doc.Phase))
	}
	old, ok := doc.Active()
	if !ok {
		return Document{}, ImportResult{}, errors.New("the spiffe CA has no active key set")
	}
	for _, k := range doc.KeySets {
		if k.ID == ks.ID {
			return Document{}, ImportResult{}, upstreamErrorf("the signed certificate is for a key the spiffe CA already holds")
		}
	}
	next := doc
	next.KeySets = slices.Clone(doc.KeySets)
	next.Upstream = &upstream
	next.PendingCSR = nil
	next.Generation++
	next.Sequence++
	res.Replaced = Fingerprint(old.PublicKey)

	var rot *PendingRotation
	if pending != nil {
		rot = pending.Rotation
	}
	if rot != nil || !sameDERSet(old.Roots, ks.Roots) {
		// The trust anchors change (or a rotation asked for this key): the
		// new root must reach every verifier before anything it anchors is
		// presented, so the intermediate joins as a rotation's new key and
		// the rotation's phases move it in.
		mode := ModeManual
		r := &Rotation{Started: now, PhaseStarted: now, Old: old.ID, New: ks.ID}
		if rot != nil && rot.Mode == ModeAuto {
			mode = ModeAuto
			r.GracePeriod = rot.GracePeriod
			r.Tail = rotationTail(rot.GracePeriod, rot.MaxTTL)
		}
		ks.State = KeyAdditional
		next.KeySets = slices.DeleteFunc(next.KeySets, func(k KeySetDocument) bool {
			return k.State == KeyRetired && (doc.Rotation == nil || k.ID != doc.Rotation.Old)
		})
		next.KeySets = append(next.KeySets, ks)
		next.Phase, next.Mode, next.Rotation = PhaseInit, mode, r
		res.StartedRotation, res.ForRotation = true, rot != nil
	} else {
		// Same roots: every chain, old or new, ends where verifiers
		// already trust, so the new intermediate signs at once and the
		// old one's key goes.
		next.KeySets = slices.DeleteFunc(next.KeySets, func(k KeySetDocument) bool { return k.State == KeyRetired })
		for i := range next.KeySets {
			if next.KeySets[i].ID == old.ID {
				next.KeySets[i].State = KeyRetired
				next.KeySets[i].EncryptedPrivateKey = nil
			}
		}
		ks.State = KeyActive
		next.KeySets = append(next.KeySets, ks)
	}
	if err := next.Validate(); err != nil {
		return Document{}, ImportResult{}, err
	}
	res.Intermediate, _ = x509.ParseCertificate(ks.Cert)
	res.Roots = parseDERList(ks.Roots)
	return next, res, nil
}

// verifyIntermediate checks that the new intermediate verifies under its
// roots as an SVID's issuer will have to: an upstream whose path length or
// name constraints leave no room for it is refused now, not discovered by
// every workload.
func verifyIntermediate(ks KeySetDocument, now time.Time) error {
	cert, err := x509.ParseCertificate(ks.Cert)
	if err != nil {
		return fmt.Errorf("parsing the new intermediate: %w", err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range parseDERList(ks.Roots) {
		roots.AddCert(c)
	}
	for _, c := range parseDERList(ks.Chain) {
		inter.AddCert(c)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return upstreamErrorf("wid's intermediate does not verify under the upstream chain (%v): check the upstream's path length and name constraints", err)
	}
	// Room below it for the SVIDs: a path length of 0 on the intermediate
	// itself is wid's own; any constraint above must allow one more level.
	for i, c := range chains[0][1:] {
		if c.BasicConstraintsValid && (c.MaxPathLen > 0 || c.MaxPathLenZero) && c.MaxPathLen < i+1 {
			return upstreamErrorf("the upstream certificate %s allows a path length of %d, which leaves no room for wid's intermediate below it: use a CA certificate with a larger pathlen", c.Subject, c.MaxPathLen)
		}
	}
	return nil
}

// signIntermediate makes a new spiffe CA key set whose certificate the
// upstream key signs. It ends at the CA TTL or, if sooner, where the
// upstream chain ends (as SPIRE's disk UpstreamAuthority caps it); capped
// is then that time.
func (m *Manager) signIntermediate(u Upstream, upKey crypto.Signer, now time.Time, state KeyState) (KeySetDocument, time.Time, error) {
	up, err := x509.ParseCertificate(u.Cert)
	if err != nil {
		return KeySetDocument{}, time.Time{}, fmt.Errorf("parsing the upstream certificate: %w", err)
	}
	chainEnd := up.NotAfter
	for _, c := range parseDERList(slices.Concat(u.Chain, u.Roots)) {
		if c.NotAfter.Before(chainEnd) {
			chainEnd = c.NotAfter
		}
	}
	if !now.Before(chainEnd) {
		return KeySetDocument{}, time.Time{}, upstreamErrorf("the upstream CA chain expired at %s: import a new upstream certificate with widctl ca import --type spiffe", chainEnd.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeySetDocument{}, time.Time{}, fmt.Errorf("generating the spiffe CA key: %w", err)
	}
	doc, err := m.newIntermediateKey(key, now, state)
	if err != nil {
		return KeySetDocument{}, time.Time{}, err
	}
	var capped time.Time
	if chainEnd.Before(doc.NotAfter) {
		doc.NotAfter, capped = chainEnd.UTC(), chainEnd.UTC()
	}
	tmpl, err := m.intermediateTemplate(key.Public(), doc.NotBefore, doc.NotAfter)
	if err != nil {
		return KeySetDocument{}, time.Time{}, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, up, key.Public(), upKey)
	if err != nil {
		return KeySetDocument{}, time.Time{}, fmt.Errorf("signing the spiffe CA's intermediate with the upstream key: %w", err)
	}
	doc.Cert = der
	if !selfSigned(up) {
		doc.Chain = slices.Concat([][]byte{u.Cert}, u.Chain)
	}
	doc.Roots = slices.Clone(u.Roots)
	return doc, capped, nil
}

// newIntermediateKey seals key as a spiffe key set without a certificate.
func (m *Manager) newIntermediateKey(key *ecdsa.PrivateKey, now time.Time, state KeyState) (KeySetDocument, error) {
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("encoding the spiffe CA public key: %w", err)
	}
	sum := sha256.Sum256(pubDER)
	doc := KeySetDocument{
		ID: hex.EncodeToString(sum[:16]), State: state, Algorithm: AlgorithmECDSAP256, PublicKey: pubDER,
		NotBefore: now.Add(-backdate).UTC(), NotAfter: now.Add(m.caTTL()).UTC(), Created: now.UTC(),
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return KeySetDocument{}, fmt.Errorf("encoding the spiffe CA private key: %w", err)
	}
	defer clear(pkcs8)
	if doc.EncryptedPrivateKey, err = m.kek.Seal(pkcs8, keyAAD(TypeSPIFFE, doc.ID)); err != nil {
		return KeySetDocument{}, fmt.Errorf("sealing the spiffe CA private key: %w", err)
	}
	return doc, nil
}

func (m *Manager) intermediateTemplate(pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := RandomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := SubjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               m.Subject.name(TypeSPIFFE, m.td),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{m.td.ID().URL()},
		SubjectKeyId:          skid,
		// As for the self-signed CA: SVIDs for another trust domain fail
		// verification under this intermediate.
		PermittedURIDomains:         []string{m.td.Name()},
		PermittedDNSDomainsCritical: true,
	}, nil
}

// upstreamSigner opens the sealed upstream key (key mode).
func (m *Manager) upstreamSigner(u *Upstream) (crypto.Signer, error) {
	plain, err := m.kek.Open(u.EncryptedPrivateKey, upstreamAAD)
	if err != nil {
		return nil, fmt.Errorf("opening the upstream CA key: %w", err)
	}
	defer clear(plain)
	key, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		return nil, fmt.Errorf("decoding the upstream CA key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("the upstream CA key of type %T cannot sign", key)
	}
	return s, nil
}

// CSRResult is a CSR waiting for the upstream's signature.
type CSRResult struct {
	CSR []byte
	// Fingerprint names the key the signed certificate must hold.
	Fingerprint string
	// New: the call made the key; otherwise it returns the one already waiting.
	New bool
	// Rotation: the signed certificate will start a rotation.
	Rotation bool
}

// RequestCSR returns a CSR for a new spiffe CA intermediate key, made and
// stored sealed if none waits yet. rot, when set, marks the key as the
// next rotation's: its signed certificate starts that rotation.
func (m *Manager) RequestCSR(ctx context.Context, rot *PendingRotation) (CSRResult, error) {
	item, err := m.backend.Get(ctx, StoreKind, string(TypeSPIFFE))
	if err != nil {
		return CSRResult{}, fmt.Errorf("reading the spiffe CA: %w", err)
	}
	doc, err := DecodeDocument(item)
	if err != nil {
		return CSRResult{}, err
	}
	if p := doc.PendingCSR; p != nil && (rot == nil || p.Rotation != nil) {
		return CSRResult{CSR: p.CSR, Fingerprint: Fingerprint(p.PublicKey), Rotation: p.Rotation != nil}, nil
	}
	next := doc
	res := CSRResult{Rotation: rot != nil}
	if p := doc.PendingCSR; p != nil {
		// The key waiting already is as good for the rotation.
		cp := *p
		cp.Rotation = rot
		next.PendingCSR = &cp
		res.CSR, res.Fingerprint = p.CSR, Fingerprint(p.PublicKey)
	} else {
		now := m.clock().UTC()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return CSRResult{}, fmt.Errorf("generating the spiffe CA key: %w", err)
		}
		ks, err := m.newIntermediateKey(key, now, KeyAdditional)
		if err != nil {
			return CSRResult{}, err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: m.Subject.name(TypeSPIFFE, m.td),
			URIs:    []*url.URL{m.td.ID().URL()},
		}, key)
		if err != nil {
			return CSRResult{}, fmt.Errorf("making the CSR: %w", err)
		}
		next.PendingCSR = &PendingCSR{ID: ks.ID, PublicKey: ks.PublicKey, EncryptedPrivateKey: ks.EncryptedPrivateKey, CSR: csr, Created: now, Rotation: rot}
		res.CSR, res.Fingerprint, res.New = csr, Fingerprint(ks.PublicKey), true
	}
	newItem, err := next.Item()
	if err != nil {
		return CSRResult{}, err
	}
	if _, err := m.backend.Apply(ctx, store.Op{Type: store.OpUpdate, Item: newItem, ExpectRevision: item.Revision}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return CSRResult{}, movedErrorf("the spiffe CA changed while its CSR was being made: retry")
		}
		return CSRResult{}, fmt.Errorf("storing the spiffe CA: %w", err)
	}
	if err := m.Reload(ctx); err != nil {
		return CSRResult{}, err
	}
	return res, nil
}

func derList(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}

// parseDERList parses certificates that Validate already checked.
func parseDERList(ders [][]byte) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		if c, err := x509.ParseCertificate(d); err == nil {
			out = append(out, c)
		}
	}
	return out
}

func sameDERSet(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y []byte) bool { return bytes.Equal(x, y) }) {
			return false
		}
	}
	return true
}
