package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// SDSConfig names the secrets the agent serves to Envoy over SDS, besides
// SPIFFE IDs and trust domain IDs. The defaults are SPIRE's.
type SDSConfig struct {
	// DefaultSVIDName names the caller's first X509-SVID (default "default").
	DefaultSVIDName string `yaml:"default_svid_name"`
	// DefaultBundleName names the trust domain's bundle (default "ROOTCA").
	DefaultBundleName string `yaml:"default_bundle_name"`
	// DefaultAllBundlesName names every bundle in one validation context
	// (default "ALL").
	DefaultAllBundlesName string `yaml:"default_all_bundles_name"`
	// SPIFFEValidator makes every validation context Envoy's SPIFFE
	// certificate validator (envoy.tls.cert_validator.spiffe), which checks
	// a peer against its own trust domain's bundle, instead of trusted_ca.
	SPIFFEValidator bool `yaml:"spiffe_validator"`
}

// withDefaults fills unset names and checks that the three are distinct and
// cannot be mistaken for a SPIFFE ID or trust domain.
func (c SDSConfig) withDefaults() (SDSConfig, error) {
	if c.DefaultSVIDName == "" {
		c.DefaultSVIDName = "default"
	}
	if c.DefaultBundleName == "" {
		c.DefaultBundleName = "ROOTCA"
	}
	if c.DefaultAllBundlesName == "" {
		c.DefaultAllBundlesName = "ALL"
	}
	names := map[string]string{"default_svid_name": c.DefaultSVIDName, "default_bundle_name": c.DefaultBundleName,
		"default_all_bundles_name": c.DefaultAllBundlesName}
	for _, key := range []string{"default_svid_name", "default_bundle_name", "default_all_bundles_name"} {
		if strings.HasPrefix(strings.ToLower(names[key]), "spiffe://") {
			return c, fmt.Errorf("agent config sds.%s is %q, a SPIFFE ID: choose a plain name such as the default", key, names[key])
		}
	}
	if c.DefaultSVIDName == c.DefaultBundleName || c.DefaultSVIDName == c.DefaultAllBundlesName || c.DefaultBundleName == c.DefaultAllBundlesName {
		return c, fmt.Errorf("agent config sds names must differ: default_svid_name %q, default_bundle_name %q, default_all_bundles_name %q",
			c.DefaultSVIDName, c.DefaultBundleName, c.DefaultAllBundlesName)
	}
	return c, nil
}

// secretTypeURL is the type of every resource SDS carries.
var secretTypeURL = "type.googleapis.com/" + string((&tlsv3.Secret{}).ProtoReflect().Descriptor().FullName())

// spiffeValidatorName is Envoy's name for its SPIFFE certificate validator.
const spiffeValidatorName = "envoy.tls.cert_validator.spiffe"

// sdsMethodPrefix marks the SDS RPCs, which Envoy calls without the
// Workload API's security header.
const sdsMethodPrefix = "/envoy.service.secret.v3.SecretDiscoveryService/"

// Bounds on a request, so that a misbehaving client cannot make the agent
// hash megabytes per change.
const (
	maxSDSNames      = 1000
	maxSDSNameLength = 2048
)

// sdsServer serves Envoy's Secret Discovery Service on the Workload API
// socket, from the same attestation, entitlements and SVID cache.
type sdsServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	a *Agent
}

// secrets is what one SDS request gets under one state.
type secrets struct {
	items []secretItem
	// version is a digest of the public part of the secrets (names,
	// certificate chains, bundles), so the same secrets have the same
	// version and a renewal always has a new one. It is computed without
	// encoding anything, so a stream woken by a change that is not its own
	// stops there.
	version string
	// held are the entitlements whose SVIDs the response carries, kept
	// fresh by the cache while a stream holds them.
	held []entitlement
	// missing are the requested names not served, with why.
	missing []string
}

// secretItem is one secret, encoded only when it is sent.
type secretItem struct {
	name   string
	digest []byte
	build  func() *tlsv3.Secret
}

// resources encodes the secrets for a DiscoveryResponse.
func (s *secrets) resources() ([]*anypb.Any, error) {
	out := make([]*anypb.Any, len(s.items))
	for i, it := range s.items {
		res, err := anypb.New(it.build())
		if err != nil {
			return nil, fmt.Errorf("encoding secret %s: %w", it.name, err)
		}
		out[i] = res
	}
	return out, nil
}

// checkDiscoveryRequest refuses what no Envoy sends, with what to change.
func checkDiscoveryRequest(req *discoveryv3.DiscoveryRequest) error {
	if t := req.GetTypeUrl(); t != "" && t != secretTypeURL {
		if len(t) > 200 {
			t = t[:200] + "..."
		}
		return status.Errorf(codes.InvalidArgument, "type_url %q is not served on this socket: the agent serves only %s over SDS", t, secretTypeURL)
	}
	if n := len(req.GetResourceNames()); n > maxSDSNames {
		return status.Errorf(codes.InvalidArgument, "the request names %d secrets: ask for at most %d per stream", n, maxSDSNames)
	}
	for _, name := range req.GetResourceNames() {
		if len(name) > maxSDSNameLength {
			return status.Errorf(codes.InvalidArgument, "a secret name is %d bytes long: names are SPIFFE IDs, trust domains or configured names of at most %d bytes", len(name), maxSDSNameLength)
		}
	}
	if err := req.Validate(); err != nil {
		return status.Errorf(codes.InvalidArgument, "the discovery request is malformed: %v", err)
	}
	return nil
}

// buildSecrets picks what names ask for (everything when names is empty,
// as in xDS) among what the caller is entitled to. A name the caller may
// not have is left out, never an error: Envoy keeps waiting for it, and the
// audit log and the agent's log say why.
func (a *Agent) buildSecrets(ctx context.Context, st *state, c *caller, method string, names []string) (*secrets, error) {
	cfg := a.sds
	want := map[string]bool{}
	for _, n := range names {
		if n != "" {
			want[n] = true
		}
	}
	all := len(want) == 0
	e := a.entitle(st, c, method)
	// One secret per SPIFFE ID: the first identity that gives it wins.
	var ents []entitlement
	seen := map[spiffeid.ID]bool{}
	for _, en := range e.list {
		if !seen[en.id] {
			seen[en.id] = true
			ents = append(ents, en)
		}
	}

	out := &secrets{}
	served, failed := map[string]bool{}, map[string]bool{}
	fed := st.federatedFor(ents)
	addBundle := func(name string, domains []trustDomainCAs) {
		digest := slices.Concat([]byte(name), []byte("\x00bundle\x00"))
		for _, d := range domains {
			digest = slices.Concat(digest, []byte(d.td.IDString()), []byte{0}, d.der, []byte{0})
		}
		if len(domains) == 1 {
			// A revocation pushes a new version (see validationSecret).
			digest = slices.Concat(digest, domains[0].crlPEM)
		} else {
			// ALL carries this trust domain's CRLs in its entry.
			for _, d := range domains {
				digest = slices.Concat(digest, []byte(d.td.IDString()), []byte("\x00crl\x00"), d.crlPEM)
			}
		}
		out.items = append(out.items, secretItem{name: name, digest: digest,
			build: func() *tlsv3.Secret { return a.validationSecret(name, domains) }})
		served[name] = true
	}
	if len(ents) > 0 || a.cfg.AllowUnauthenticatedVerifiers {
		own := trustDomainCAs{td: st.td, certs: st.x509Authorities, der: st.x509BundleDER, crlPEM: st.crlPEM}
		if all || want[st.td.IDString()] {
			addBundle(st.td.IDString(), []trustDomainCAs{own})
		}
		// A foreign trust domain's validation context by its name, for the
		// identities that federate with it.
		for _, f := range fed {
			if all || want[f.td.IDString()] {
				addBundle(f.td.IDString(), []trustDomainCAs{{td: f.td, certs: f.x509Authorities, der: f.x509BundleDER}})
			}
		}
		if want[cfg.DefaultBundleName] {
			addBundle(cfg.DefaultBundleName, []trustDomainCAs{own})
		}
		if want[cfg.DefaultAllBundlesName] {
			domains := []trustDomainCAs{own}
			for _, f := range fed {
				domains = append(domains, trustDomainCAs{td: f.td, certs: f.x509Authorities, der: f.x509BundleDER})
			}
			addBundle(cfg.DefaultAllBundlesName, domains)
		}
	}

	// The X509-SVIDs asked for, each issued (or taken from the cache) once
	// even when asked for by SPIFFE ID and as the default.
	type certName struct {
		name string
		ent  int
	}
	var certNames []certName
	var fetch []entitlement
	for i, en := range ents {
		id := en.id.String()
		asID := all || want[id]
		asDefault := i == 0 && want[cfg.DefaultSVIDName]
		if !asID && !asDefault {
			continue
		}
		if asID {
			certNames = append(certNames, certName{id, len(fetch)})
		}
		if asDefault {
			certNames = append(certNames, certName{cfg.DefaultSVIDName, len(fetch)})
		}
		fetch = append(fetch, en)
	}
	if len(fetch) > 0 {
		svids, errs := a.cache.get(ctx, authv1.SVIDTypeX509, fetch, nil, c.res.Attributes)
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		out.held = fetch
		for _, cn := range certNames {
			s := svids[cn.ent]
			if s == nil {
				out.missing = append(out.missing, fmt.Sprintf("%s: %v", cn.name, errs[cn.ent]))
				failed[cn.name] = true
				continue
			}
			name := cn.name
			out.items = append(out.items, secretItem{name: name,
				digest: slices.Concat([]byte(name), []byte("\x00svid\x00"), s.chainDER),
				build:  func() *tlsv3.Secret { return tlsSecret(name, s) }})
			served[name] = true
		}
	}
	var refused, refusals []string
	for _, n := range slices.Sorted(maps.Keys(want)) {
		if served[n] || failed[n] {
			continue
		}
		reason := "not a SPIFFE ID, trust domain or configured name this process is entitled to"
		if len(ents) == 0 {
			reason = "this process is entitled to no identity"
			if r := e.reason(); r != "" {
				reason += ": " + r
			}
		}
		refused = append(refused, n)
		refusals = append(refusals, n+": "+reason)
	}
	if len(refused) > 0 {
		// Audited once per process instance and set of names, as a denied
		// attestation (those that fail at the auth service are audited
		// there).
		a.attests.record(c.res.Key+"\x00sds-refused\x00"+strings.Join(refused, ","), method, c.res.Attributes, nil,
			"asked over SDS for secrets it may not have: "+strings.Join(refusals, "; "))
		out.missing = append(out.missing, refusals...)
	}

	slices.SortFunc(out.items, func(x, y secretItem) int { return strings.Compare(x.name, y.name) })
	h := sha256.New()
	if cfg.SPIFFEValidator {
		h.Write([]byte("spiffe-validator\x00"))
	}
	for _, it := range out.items {
		fmt.Fprintf(h, "%d\x00", len(it.digest))
		h.Write(it.digest)
	}
	out.version = hex.EncodeToString(h.Sum(nil)[:8])
	return out, nil
}

// tlsSecret is an X509-SVID as Envoy takes a certificate: PEM chain and
// PKCS#8 key, inline.
func tlsSecret(name string, s *svid) *tlsv3.Secret {
	var chain bytes.Buffer
	for _, der := range s.chain {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der}) // only fails writing
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: s.keyDER})
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chain.Bytes()}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
	}}}
}

// trustDomainCAs is one trust domain's X.509 authorities and, for this
// trust domain only, the CRLs they signed (PEM): the auth service publishes
// no CRL of a federated trust domain.
type trustDomainCAs struct {
	td     spiffeid.TrustDomain
	certs  []*x509.Certificate
	der    []byte
	crlPEM []byte
}

// validationSecret is the bundles of domains as Envoy validates peers with
// them: trusted_ca (every authority in one list), or the SPIFFE validator
// with one entry per trust domain. The bundle name and the trust domain's
// ID carry this trust domain's authorities; a foreign trust domain's ID,
// its own; the all-bundles name, this one's and the federated ones'.
// This trust domain's CRLs go in crl, so that Envoy refuses a revoked
// peer before it expires.
//
// More than one trust domain is always the SPIFFE validator, whatever
// sds.spiffe_validator says: in one trusted_ca list a partner's CA could
// sign spiffe://<this trust domain>/... and Envoy would take it. Each
// domain's CRLs then go in its own entry's trust_bundle, after its CAs,
// where Envoy's SPIFFE validator reads them (it ignores crl) and checks
// revocation for that domain only, so a partner without CRLs here is not
// refused for lacking one.
func (a *Agent) validationSecret(name string, domains []trustDomainCAs) *tlsv3.Secret {
	spiffeValidator := a.sds.SPIFFEValidator || len(domains) > 1
	var all, crls bytes.Buffer
	var entries []*tlsv3.SPIFFECertValidatorConfig_TrustDomain
	for _, d := range domains {
		var pemCAs bytes.Buffer
		for _, c := range d.certs {
			_ = pem.Encode(&pemCAs, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		all.Write(pemCAs.Bytes())
		if len(domains) == 1 {
			crls.Write(d.crlPEM)
		}
		trustBundle := pemCAs.Bytes()
		if len(domains) > 1 {
			trustBundle = slices.Concat(trustBundle, d.crlPEM)
		}
		entries = append(entries, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name:        d.td.Name(),
			TrustBundle: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: trustBundle}},
		})
	}
	vc := &tlsv3.CertificateValidationContext{}
	if spiffeValidator {
		cfg, _ := anypb.New(&tlsv3.SPIFFECertValidatorConfig{TrustDomains: entries})
		vc.CustomValidatorConfig = &corev3.TypedExtensionConfig{Name: spiffeValidatorName, TypedConfig: cfg}
	} else {
		vc.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: all.Bytes()}}
	}
	if crls.Len() > 0 {
		vc.Crl = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: crls.Bytes()}}
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
}

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sameNames reports whether two subscriptions name the same set.
func sameNames(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

// StreamSecrets follows xDS: the first request (or one naming other
// secrets) gets a response at once; a request answering the last response
// (its nonce), whether it accepts it (ACK) or rejects it (NACK, with
// error_detail), gets nothing until the secrets change: a NACK is logged,
// never answered with the same secrets again. A request with an older
// nonce is stale and ignored. Renewals, identity and bundle changes push a
// new version as soon as they happen.
func (s *sdsServer) StreamSecrets(stream secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	a := s.a
	ctx := stream.Context()
	c, err := a.attestCaller(ctx)
	if err != nil {
		return err
	}
	if _, err := a.waitState(ctx); err != nil {
		return stateError(err)
	}
	log := a.logger.With("rpc", "StreamSecrets", "pid", c.res.Attributes["workload.unix.pid"])

	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var (
		node       string
		names      []string
		subscribed bool
		lastSent   string // version
		nonce      string
		held       []entitlement
		// Nil until the first request: nothing is sent before Envoy asks.
		stateCh, svidCh <-chan struct{}
	)
	defer func() { a.cache.watch(authv1.SVIDTypeX509, held, nil, -1) }()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if err := checkDiscoveryRequest(req); err != nil {
				// The client is told; a flood of these must not flood the log.
				log.Debug("refused a malformed SDS request", "error", err)
				return err
			}
			if id := req.GetNode().GetId(); id != "" && node == "" {
				// Envoy names its node on a stream's first request only.
				node = id
				log = log.With("node", node)
			}
			if d := req.GetErrorDetail(); d != nil {
				a.metrics.sdsNACKs.Inc()
				log.Warn("envoy rejected secrets", "resource_names", req.GetResourceNames(),
					"rejected_nonce", req.GetResponseNonce(), "kept_version", req.GetVersionInfo(), "envoy_error", d.GetMessage())
			}
			if nonce != "" && req.GetResponseNonce() != nonce {
				log.Debug("ignoring a stale SDS request", "nonce", req.GetResponseNonce(), "want_nonce", nonce)
				continue
			}
			if subscribed && sameNames(names, req.GetResourceNames()) {
				// An ACK or a NACK of what was last sent.
				continue
			}
			names, subscribed, force = slices.Clone(req.GetResourceNames()), true, true
		case <-stateCh:
		case <-svidCh:
		}
		stateCh, svidCh = a.stateChanged.wait(), a.cache.changed.wait()
		sec, err := a.buildSecrets(ctx, a.st.Load(), c, "StreamSecrets", names)
		if err != nil {
			return err
		}
		a.cache.watch(authv1.SVIDTypeX509, sec.held, nil, +1)
		a.cache.watch(authv1.SVIDTypeX509, held, nil, -1)
		held = sec.held
		if !force && sec.version == lastSent {
			continue
		}
		nonce = newNonce()
		if len(sec.missing) > 0 {
			log.Info("some requested secrets are not served", "missing", sec.missing)
		}
		res, err := sec.resources()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: sec.version, Resources: res, TypeUrl: secretTypeURL, Nonce: nonce}
		if err := a.sendBounded(ctx, "StreamSecrets", func() error { return stream.Send(resp) }); err != nil {
			return err
		}
		lastSent = sec.version
	}
}

// FetchSecrets answers once with what the request names.
func (s *sdsServer) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	a := s.a
	if err := checkDiscoveryRequest(req); err != nil {
		return nil, err
	}
	c, err := a.attestCaller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := a.waitState(ctx)
	if err != nil {
		return nil, stateError(err)
	}
	sec, err := a.buildSecrets(ctx, st, c, "FetchSecrets", req.GetResourceNames())
	if err != nil {
		return nil, err
	}
	if len(sec.missing) > 0 {
		a.logger.Info("some requested secrets are not served", "rpc", "FetchSecrets", "missing", sec.missing)
	}
	res, err := sec.resources()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: sec.version, Resources: res, TypeUrl: secretTypeURL, Nonce: newNonce()}, nil
}

// DeltaSecrets is not served, as with SPIRE: Envoy's SDS config uses
// StreamSecrets (api_type GRPC).
func (s *sdsServer) DeltaSecrets(secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return status.Error(codes.Unimplemented, "DeltaSecrets is not served: set api_type: GRPC in Envoy's sds_config to use StreamSecrets")
}
