package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// federatedBundleKind is the store kind of what the auth service holds of
// each foreign trust domain: the last good bundle and how refreshing goes.
// It lives in the store so that every replica serves the same bundle and a
// replica that takes over the refreshes goes on where the last one stopped.
const federatedBundleKind = "federated_bundle"

// Refresh bounds. A bundle endpoint's spiffe_refresh_hint outside
// [minRefreshHint, maxRefreshHint] is refused: 0 would have the auth
// service fetch in a loop, years would never see a rotation.
const (
	minRefreshHint     = time.Second
	maxRefreshHint     = 7 * 24 * time.Hour
	defaultRefreshHint = 5 * time.Minute
	// maxRetryInterval caps the backoff after failed refreshes.
	maxRetryInterval = 5 * time.Minute
	// fetchTimeout bounds one fetch, connection to last byte.
	fetchTimeout = 10 * time.Second
	// maxRedirects bounds the redirects a fetch follows, on its own host.
	maxRedirects = 3
)

// MaxFederatedBundlesBytes bounds what agents get of every foreign trust
// domain together (encoded), so that the first state an agent gets, which
// carries them all with its identities, stays well under gRPC's 4 MiB
// message limit. A bundle that would push the total over it is refused.
const MaxFederatedBundlesBytes = 2 << 20

// checkFederatedTotal refuses fb when, with every other federated bundle
// agents get, it would take more than MaxFederatedBundlesBytes.
func (s *Server) checkFederatedTotal(fb *authv1.FederatedBundle) error {
	total := proto.Size(fb)
	for _, o := range s.fed.agentBundles() {
		if o.TrustDomain != fb.TrustDomain {
			total += proto.Size(o)
		}
	}
	if total > MaxFederatedBundlesBytes {
		return fmt.Errorf("with the bundle of %s the federated bundles agents get would take %d bytes, over the limit of %d that fits in one message to an agent: federate with fewer trust domains, or ask for smaller bundles", fb.TrustDomain, total, MaxFederatedBundlesBytes)
	}
	return nil
}

// federatedRecord is the stored federatedBundleKind document.
type federatedRecord struct {
	// Bundle is the last good SPIFFE bundle, as the endpoint sent it.
	Bundle      string        `json:"bundle,omitempty"`
	Sequence    uint64        `json:"sequence,omitempty"`
	RefreshHint time.Duration `json:"refresh_hint,omitempty"`
	LastRefresh time.Time     `json:"last_refresh,omitzero"`
	LastAttempt time.Time     `json:"last_attempt,omitzero"`
	Error       string        `json:"error,omitempty"`
	Failures    int           `json:"failures,omitempty"`
	// URL is where Bundle came from: a federation pointed elsewhere is
	// fetched again at once.
	URL string `json:"url,omitempty"`
	// SpecBundle is the SHA-256 (hex) of the spec.bundle the record grew
	// from. An operator who pins another bundle (say, after the partner's
	// CA leaked) voids the record: what was fetched under the old pin is
	// trusted no longer, and the next fetch is authenticated by the new one.
	SpecBundle string `json:"spec_bundle,omitempty"`
}

func specBundleHash(f *resource.Federation) string {
	sum := sha256.Sum256([]byte(f.Spec.Bundle))
	return hex.EncodeToString(sum[:])
}

// currentRecord is rec if it grew from f's spec.bundle, else nil: a record
// of another pin (or of a version that did not note its pin) is void.
func currentRecord(f *resource.Federation, rec *federatedRecord) *federatedRecord {
	if rec == nil || rec.SpecBundle != specBundleHash(f) {
		return nil
	}
	return rec
}

// federations holds what agents get of the foreign trust domains.
type federations struct {
	// agent is every federated bundle, sorted by trust domain.
	agent atomic.Pointer[[]*authv1.FederatedBundle]
	// wake makes the refresher look again (a federation was written).
	wake chan struct{}
	// mu serializes reloads.
	mu sync.Mutex
	// times holds each trust domain's last attempt and refresh when the
	// record was not written for them (see federationRecordEvery).
	timesMu sync.Mutex
	times   map[string][2]time.Time
}

// federationRecordEvery is how often a refresh that changed nothing but
// its times is written to the store: a short refresh hint would otherwise
// write (and wake every replica's change feed) on every fetch.
const federationRecordEvery = time.Minute

func (f *federations) noteTimes(td string, attempt, refresh time.Time) {
	f.timesMu.Lock()
	defer f.timesMu.Unlock()
	f.times[td] = [2]time.Time{attempt, refresh}
}

// withTimes is rec with the times noted in memory when they are later.
func (f *federations) withTimes(td string, rec *federatedRecord) *federatedRecord {
	if rec == nil {
		return nil
	}
	f.timesMu.Lock()
	t, ok := f.times[td]
	f.timesMu.Unlock()
	if !ok {
		return rec
	}
	r := *rec
	if t[0].After(r.LastAttempt) {
		r.LastAttempt = t[0]
	}
	if t[1].After(r.LastRefresh) {
		r.LastRefresh = t[1]
	}
	return &r
}

func newFederations() *federations {
	f := &federations{wake: make(chan struct{}, 1), times: map[string][2]time.Time{}}
	f.agent.Store(&[]*authv1.FederatedBundle{})
	return f
}

// agentBundles is what agents get of the foreign trust domains.
func (f *federations) agentBundles() []*authv1.FederatedBundle {
	return *f.agent.Load()
}

func (f *federations) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// listFederations reads every federation and the record of each.
func (s *Server) listFederations(ctx context.Context) ([]*resource.Federation, map[string]*federatedRecord, error) {
	list, err := s.res.list(ctx, resource.KindFederation)
	if err != nil {
		return nil, nil, err
	}
	feds := make([]*resource.Federation, 0, len(list))
	for _, v := range list {
		if f, ok := v.(*resource.Federation); ok {
			feds = append(feds, f)
		}
	}
	items, err := s.db.List(ctx, federatedBundleKind)
	if err != nil {
		return nil, nil, err
	}
	recs := make(map[string]*federatedRecord, len(items))
	for _, it := range items {
		var r federatedRecord
		if err := json.Unmarshal(it.Data, &r); err != nil {
			s.log.Warn("a stored federated bundle does not decode; it is fetched again", "trust_domain", it.Name, "error", err)
			continue
		}
		recs[it.Name] = &r
	}
	return feds, recs, nil
}

// heldBundle is the bundle held for f: the last fetched under f's current
// spec.bundle, else spec.bundle itself; nil when there is neither.
func heldBundle(f *resource.Federation, rec *federatedRecord) (*spiffebundle.Bundle, error) {
	td, err := f.TrustDomain()
	if err != nil {
		return nil, err
	}
	data := f.Spec.Bundle
	if rec = currentRecord(f, rec); rec != nil && rec.Bundle != "" {
		data = rec.Bundle
	}
	if data == "" {
		return nil, nil
	}
	return resource.ParseBundle(td, []byte(data))
}

// reloadFederations reads the federated bundles again and, when they
// changed, pushes them to agents.
func (s *Server) reloadFederations(ctx context.Context) error {
	s.fed.mu.Lock()
	defer s.fed.mu.Unlock()
	feds, recs, err := s.listFederations(ctx)
	if err != nil {
		return fmt.Errorf("reading the federations: %w", err)
	}
	out := make([]*authv1.FederatedBundle, 0, len(feds))
	for _, f := range feds {
		b, err := heldBundle(f, recs[f.Metadata.Name])
		if err != nil {
			s.log.Warn("the bundle held for a federated trust domain does not decode; its workloads go without it", "trust_domain", f.Metadata.Name, "error", err)
			continue
		}
		if b == nil {
			continue
		}
		fb, err := agentFederatedBundle(b)
		if err != nil {
			// One bad bundle must not keep every other from agents.
			s.log.Warn("the bundle held for a federated trust domain cannot be handed to agents; its workloads go without it", "trust_domain", f.Metadata.Name, "error", err)
			continue
		}
		out = append(out, fb)
	}
	slices.SortFunc(out, func(a, b *authv1.FederatedBundle) int { return strings.Compare(a.TrustDomain, b.TrustDomain) })
	s.fed.agent.Store(&out)
	s.agentChanged(ctx, feedKindCA, "")
	return nil
}

func agentFederatedBundle(b *spiffebundle.Bundle) (*authv1.FederatedBundle, error) {
	fb := &authv1.FederatedBundle{TrustDomain: b.TrustDomain().Name()}
	for _, c := range b.X509Authorities() {
		fb.X509Authorities = append(fb.X509Authorities, c.Raw)
	}
	if keys := b.JWTAuthorities(); len(keys) > 0 {
		jwks, err := ca.EncodeJWKS(keys, ca.UseJWTSVID)
		if err != nil {
			return nil, fmt.Errorf("encoding the JWT authorities of %s: %w", fb.TrustDomain, err)
		}
		fb.JwtJwks = jwks
	}
	if seq, ok := b.SequenceNumber(); ok {
		fb.Sequence = int64(seq)
	}
	return fb, nil
}

// sameBundle is spiffebundle's Equal, but comparing keys with their own
// Equal: go-spiffe's never finds two key types equal (a symmetric key, say),
// and a bundle found changed on every refresh is audited on every refresh.
func sameBundle(a, b *spiffebundle.Bundle) bool {
	ah, aok := a.RefreshHint()
	bh, bok := b.RefreshHint()
	as, asok := a.SequenceNumber()
	bs, bsok := b.SequenceNumber()
	return a.TrustDomain() == b.TrustDomain() && ah == bh && aok == bok && as == bs && asok == bsok &&
		slices.EqualFunc(a.X509Authorities(), b.X509Authorities(), func(x, y *x509.Certificate) bool { return x.Equal(y) }) &&
		sameKeys(a.JWTAuthorities(), b.JWTAuthorities()) && sameKeys(a.WITAuthorities(), b.WITAuthorities())
}

func sameKeys(a, b map[string]crypto.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for kid, ka := range a {
		kb, ok := b[kid]
		if !ok {
			return false
		}
		switch k := ka.(type) {
		case interface{ Equal(crypto.PublicKey) bool }:
			if !k.Equal(kb) {
				return false
			}
		case []byte:
			if o, ok := kb.([]byte); !ok || !bytes.Equal(k, o) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// federationChanged follows a write to a federation or its record.
func (s *Server) federationChanged(ctx context.Context) error {
	s.fed.poke()
	return s.reloadFederations(ctx)
}

// checkFederation refuses a federation with this trust domain itself, and
// more federations than MaxFederations.
func (s *Server) checkFederation(ctx context.Context, v resource.Resource) error {
	f, ok := v.(*resource.Federation)
	if !ok {
		return nil
	}
	f.Status = nil
	if f.Metadata.Name == s.td.Name() {
		return status.Errorf(codes.InvalidArgument, "%s is this trust domain: a trust domain trusts itself already, so federate only with others", f.Metadata.Name)
	}
	if b, err := heldBundle(f, nil); err == nil && b != nil {
		fb, err := agentFederatedBundle(b)
		if err == nil {
			err = s.checkFederatedTotal(fb)
		}
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "spec.bundle: %v", err)
		}
	}
	list, err := s.res.list(ctx, resource.KindFederation)
	if err != nil {
		return storeError(resource.KindFederation, err)
	}
	if len(list) >= resource.MaxFederations && !slices.ContainsFunc(list, func(o resource.Resource) bool { return o.GetMetadata().Name == f.Metadata.Name }) {
		return status.Errorf(codes.ResourceExhausted, "this trust domain federates with %d trust domains already, the limit: remove one first", len(list))
	}
	return nil
}

// addFederationStatus fills in how refreshing goes, if v is a federation.
func (s *Server) addFederationStatus(ctx context.Context, v resource.Resource) error {
	f, ok := v.(*resource.Federation)
	if !ok {
		return nil
	}
	st := &resource.FederationStatus{}
	it, err := s.db.Get(ctx, federatedBundleKind, f.Metadata.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return storeError("federated bundle of "+f.Metadata.Name, err)
	default:
		var r federatedRecord
		if json.Unmarshal(it.Data, &r) == nil && currentRecord(f, &r) != nil {
			r := s.fed.withTimes(f.Metadata.Name, &r)
			st.LastRefresh, st.LastAttempt, st.Error, st.Sequence = r.LastRefresh, r.LastAttempt, r.Error, r.Sequence
		}
	}
	if st.Sequence == 0 {
		if b, err := heldBundle(f, nil); err == nil && b != nil {
			st.Sequence, _ = b.SequenceNumber()
		}
	}
	f.Status = st
	return nil
}

// runFederationRefresh refreshes every foreign bundle when it is due,
// until ctx ends. Only the replica holding the periodic lease runs it.
func (s *Server) runFederationRefresh(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := s.refreshDueFederations(ctx)
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.fed.wake:
		case <-timer.C:
		}
	}
}

// refreshDueFederations refreshes what is due and says how long until the
// next is.
func (s *Server) refreshDueFederations(ctx context.Context) time.Duration {
	const idle = 30 * time.Second
	feds, recs, err := s.listFederations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot read the federations; trying again", "error", err)
		}
		return 5 * time.Second
	}
	wait := idle
	names := map[string]bool{}
	for _, f := range feds {
		names[f.Metadata.Name] = true
		rec := currentRecord(f, recs[f.Metadata.Name])
		if d := dueIn(s.fed.withTimes(f.Metadata.Name, rec), f, s.clock()); d > 0 {
			wait = min(wait, d)
			continue
		}
		rec = s.refreshFederation(ctx, f, rec)
		wait = min(wait, max(dueIn(rec, f, s.clock()), 10*time.Millisecond))
	}
	// Records of removed federations go, so that one made again starts afresh.
	for name := range recs {
		if !names[name] {
			if _, err := s.db.Apply(ctx, store.Op{Type: store.OpDelete, Item: store.Item{Kind: federatedBundleKind, Name: name}}); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.log.Warn("cannot remove the bundle of a removed federation", "trust_domain", name, "error", err)
			}
		}
	}
	return wait
}

// sameButTimes says whether two records differ in their times only.
func sameButTimes(a, b federatedRecord) bool {
	a.LastAttempt, a.LastRefresh = time.Time{}, time.Time{}
	b.LastAttempt, b.LastRefresh = time.Time{}, time.Time{}
	return a == b
}

// dueIn is how long until f is next refreshed (<= 0: now).
func dueIn(rec *federatedRecord, f *resource.Federation, now time.Time) time.Duration {
	if rec = currentRecord(f, rec); rec == nil || rec.LastAttempt.IsZero() || rec.URL != f.Spec.BundleEndpointURL {
		return 0
	}
	interval := rec.RefreshHint
	if interval <= 0 {
		interval = defaultRefreshHint
	}
	if rec.Error != "" {
		// Back off from a second, doubling, to at most the hint.
		retry := time.Second << min(rec.Failures-1, 16)
		interval = min(interval, retry, maxRetryInterval)
	}
	return rec.LastAttempt.Add(interval).Sub(now)
}

// refreshFederation fetches f's bundle once, records the outcome and
// audits a change or a failure. It returns the new record.
func (s *Server) refreshFederation(ctx context.Context, f *resource.Federation, rec *federatedRecord) *federatedRecord {
	// A void record (another pin) is started afresh, sequence included: a
	// sequence the old pin let in must not hold back the new one's bundles.
	rec = currentRecord(f, rec)
	next := federatedRecord{SpecBundle: specBundleHash(f)}
	if rec != nil {
		next = *rec
	}
	if next.URL != f.Spec.BundleEndpointURL {
		// Another endpoint: its hint is unknown until it answers.
		next.RefreshHint = 0
	}
	held, herr := heldBundle(f, rec)
	now := s.clock()
	next.LastAttempt = now
	b, body, err := fetchFederatedBundle(ctx, f, held, next.Sequence, nil)
	if herr != nil && err == nil && f.Spec.Profile == resource.ProfileHTTPSSPIFFE {
		err = herr
	}
	if err == nil {
		// fetchFederatedBundle checked that it encodes.
		fb, _ := agentFederatedBundle(b)
		if terr := s.checkFederatedTotal(fb); terr != nil {
			err = fmt.Errorf("refusing the bundle from %s: %w", f.Spec.BundleEndpointURL, terr)
		}
	}
	td := f.Metadata.Name
	ev := audit.Event{Actor: s.adminActor(), Host: s.host, Resource: resource.KindFederation + "/" + td,
		Details: map[string]string{"trust_domain": td, "url": f.Spec.BundleEndpointURL}}
	if err != nil {
		if ctx.Err() != nil {
			return rec
		}
		next.Error, next.Failures = err.Error(), next.Failures+1
		next.URL = f.Spec.BundleEndpointURL
		s.log.Warn("refreshing a federated bundle failed; the last good bundle is kept", "trust_domain", td, "error", err)
		ev.Type, ev.Outcome, ev.Reason = audit.TypeFederationRefreshFailed, audit.OutcomeError, err.Error()
	} else {
		hint, _ := b.RefreshHint()
		seq, _ := b.SequenceNumber()
		changed := held == nil || !sameBundle(held, b)
		next.Bundle, next.Sequence, next.RefreshHint = string(body), seq, hint
		next.LastRefresh, next.Error, next.Failures, next.URL = now, "", 0, f.Spec.BundleEndpointURL
		if changed {
			ev.Type, ev.Outcome = audit.TypeFederationRefreshed, audit.OutcomeSuccess
			ev.Details["sequence"] = fmt.Sprint(seq)
			if held != nil {
				prev, _ := held.SequenceNumber()
				ev.Details["previous_sequence"] = fmt.Sprint(prev)
			}
			s.log.Info("a federated bundle changed", "trust_domain", td, "sequence", seq)
		}
	}
	if rec != nil && ev.Type == "" && sameButTimes(*rec, next) && now.Sub(rec.LastAttempt) < federationRecordEvery {
		s.fed.noteTimes(td, next.LastAttempt, next.LastRefresh)
		return &next
	}
	data, jerr := json.Marshal(next)
	if jerr == nil {
		_, jerr = s.db.Apply(ctx, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: federatedBundleKind, Name: td, Data: data}})
	}
	if jerr != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot store a federated bundle's refresh; trying again", "trust_domain", td, "error", jerr)
		}
		return rec
	}
	if ev.Type != "" {
		if _, err := s.audit.Emit(ctx, ev); err != nil && ctx.Err() == nil {
			s.log.Warn("cannot audit a federated bundle's refresh", "trust_domain", td, "error", err)
		}
	}
	return &next
}

// fetchFederatedBundle fetches f's bundle from its endpoint, authenticated
// by f's profile (held authenticates an https_spiffe endpoint), and checks
// it: of f's trust domain, within MaxBundleSize, a sequence not under
// heldSeq, a refresh hint within bounds. The body is returned as sent.
// webRoots verifies https_web endpoints; nil means the system's roots.
func fetchFederatedBundle(ctx context.Context, f *resource.Federation, held *spiffebundle.Bundle, heldSeq uint64, webRoots *x509.CertPool) (*spiffebundle.Bundle, []byte, error) {
	td, err := f.TrustDomain()
	if err != nil {
		return nil, nil, err
	}
	var conf *tls.Config
	switch f.Spec.Profile {
	case resource.ProfileHTTPSSPIFFE:
		if held == nil || len(held.X509Authorities()) == 0 {
			return nil, nil, fmt.Errorf("no bundle of %s is held to authenticate its https_spiffe endpoint: give one with --bundle", td.Name())
		}
		id, err := f.EndpointID()
		if err != nil {
			return nil, nil, err
		}
		conf = tlsconfig.TLSClientConfig(held, tlsconfig.AuthorizeID(id))
	case resource.ProfileHTTPSWeb:
		// The system's roots (SSL_CERT_FILE and SSL_CERT_DIR are honoured).
		conf = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: webRoots}
	default:
		return nil, nil, fmt.Errorf("profile %q is unknown", f.Spec.Profile)
	}
	client := &http.Client{
		Timeout: fetchTimeout,
		// No proxy from the environment: the operator named this URL.
		Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true, DisableKeepAlives: true, ResponseHeaderTimeout: fetchTimeout},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != via[0].URL.Host || req.URL.Scheme != "https" {
				return fmt.Errorf("the endpoint redirected to %s://%s, another host: only the host the federation names is trusted", req.URL.Scheme, req.URL.Host)
			}
			if len(via) >= maxRedirects {
				return fmt.Errorf("the endpoint redirected over %d times", maxRedirects)
			}
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.Spec.BundleEndpointURL, http.NoBody)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching %s: %w", f.Spec.BundleEndpointURL, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetching %s: %w", f.Spec.BundleEndpointURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetching %s: the endpoint answered HTTP %s", f.Spec.BundleEndpointURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, resource.MaxBundleSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the bundle from %s: %w", f.Spec.BundleEndpointURL, err)
	}
	if len(body) > resource.MaxBundleSize {
		return nil, nil, fmt.Errorf("the bundle from %s is over the limit of %d bytes", f.Spec.BundleEndpointURL, resource.MaxBundleSize)
	}
	b, err := resource.ParseBundle(td, body)
	if err != nil {
		return nil, nil, fmt.Errorf("refusing the bundle from %s: %w", f.Spec.BundleEndpointURL, err)
	}
	if _, err := agentFederatedBundle(b); err != nil {
		return nil, nil, fmt.Errorf("refusing the bundle from %s: %w", f.Spec.BundleEndpointURL, err)
	}
	if len(b.X509Authorities()) == 0 {
		return nil, nil, fmt.Errorf("refusing the bundle from %s: it holds no X.509 authorities", f.Spec.BundleEndpointURL)
	}
	seq, hasSeq := b.SequenceNumber()
	if !hasSeq && heldSeq > 0 {
		// Taken as 0, it would let every older sequence in again.
		return nil, nil, fmt.Errorf("refusing the bundle from %s: it has no spiffe_sequence, but sequence %d is held (a replayed or rolled-back bundle)", f.Spec.BundleEndpointURL, heldSeq)
	}
	if hasSeq && seq < heldSeq {
		return nil, nil, fmt.Errorf("refusing the bundle from %s: its spiffe_sequence %d is below %d, the one held (a replayed or rolled-back bundle)", f.Spec.BundleEndpointURL, seq, heldSeq)
	}
	if hint, ok := b.RefreshHint(); ok && (hint < minRefreshHint || hint > maxRefreshHint) {
		return nil, nil, fmt.Errorf("refusing the bundle from %s: its spiffe_refresh_hint %s is outside %s to %s", f.Spec.BundleEndpointURL, hint, minRefreshHint, maxRefreshHint)
	}
	return b, body, nil
}
