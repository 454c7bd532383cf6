package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"golang.org/x/sync/errgroup"
)

// svid is one issued SVID with what the Workload API hands out for it. It is
// never modified: a renewal replaces it.
type svid struct {
	kind     string
	spiffeID string
	hint     string
	// chainDER is the certificate chain, DER, leaf first, concatenated (x509).
	chainDER []byte
	chain    [][]byte
	// keyDER is the PKCS#8 private key (x509, and wit's key in DER).
	keyDER []byte
	// token is the JWS (jwt, wit).
	token string
	// keyJWK is the private key as a JWK (wit).
	keyJWK  string
	serial  string
	issued  time.Time
	expires time.Time
	// signer names the CA key that signed it (see ca.KeySet.SignerID):
	// during a CA rotation, SVIDs of an older key are renewed early.
	signer string
}

// renewAt is half-way through the SVID's life.
func (s *svid) renewAt() time.Time { return s.issued.Add(s.expires.Sub(s.issued) / 2) }

func (s *svid) valid(now time.Time) bool { return now.Before(s.expires) }

// entry is one SVID the agent keeps: which entitlement it serves, the
// attributes of the workload it was issued for, and its current SVID.
type entry struct {
	key       string
	kind      string
	ent       entitlement
	audiences []string
	attrs     map[string]string

	// Guarded by cache.mu.
	cur      *svid
	inflight chan struct{} // closed when the running issuance ends
	lastErr  error
	lastUsed time.Time
	watchers int // streams and outputs that hold this SVID
	pinned   bool
	failures int
	retryAt  time.Time
	// renewedFor is the signer an early renewal was started for, so that a
	// rotation renews each SVID once rather than in a loop.
	renewedFor string
}

// wanted reports whether the entry should be kept fresh: something watches
// it, or a workload asked for it within its lifetime. Unwanted entries are
// dropped at renewal time instead of renewed, so an idle agent makes no
// auth calls for SVIDs nobody uses.
func (e *entry) wanted(now time.Time) bool {
	if e.pinned || e.watchers > 0 {
		return true
	}
	if e.cur == nil {
		return now.Sub(e.lastUsed) < time.Minute
	}
	return now.Sub(e.lastUsed) < e.cur.expires.Sub(e.cur.issued)
}

// issueFunc calls the auth service's IssueWorkloadSVIDs.
type issueFunc func(ctx context.Context, req *authv1.IssueWorkloadSVIDsRequest) (*authv1.IssueWorkloadSVIDsResponse, error)

// cache holds every SVID the agent serves, issues what is missing in
// batches, and renews what is wanted at half its life.
type cache struct {
	issue issueFunc
	// authDown, when set, says the auth service's stream is down.
	authDown func() bool
	logger   *slog.Logger
	metrics  *metrics
	changed  *notifier

	mu      sync.Mutex
	entries map[string]*entry
	// kick wakes the renewal loop when an entry's schedule moves earlier.
	kick chan struct{}
	// signers is the signing key of each SVID kind's CA, as last pushed.
	signers map[string]string
	// skewLog bounds the warnings about the clock skew to the auth service.
	skewLog rateLog
	// st is the state the entries were last checked against (see prune);
	// nil until the first one.
	st *state
}

func newCache(issue issueFunc, logger *slog.Logger, m *metrics) *cache {
	return &cache{issue: issue, logger: logger, metrics: m, changed: newNotifier(), skewLog: rateLog{every: 10 * time.Minute},
		entries: map[string]*entry{}, kick: make(chan struct{}, 1)}
}

// denial is an SVID the auth service refused, with its reason.
type denial struct {
	spiffeID string
	check    string
	reason   string
}

func (d *denial) Error() string { return d.reason }

// unavailableError is an SVID that could not be issued because the auth
// service could not be reached, or answered with an error for the batch.
type unavailableError struct{ err error }

func (u *unavailableError) Error() string {
	if msg, _, ok := client.ServerAnswer(u.err); ok {
		// Reached, and it said why not (a full disk, a stop under way).
		return "the auth service did not issue it: " + msg
	}
	return "the auth service could not be reached to issue it: " + u.err.Error()
}
func (u *unavailableError) Unwrap() error { return u.err }

func entryKey(kind string, en entitlement, audiences []string) string {
	k := kind + "\x00" + en.key
	if kind == authv1.SVIDTypeJWT {
		k += "\x00" + strings.Join(audiences, "\x00")
	}
	return k
}

// get returns a valid SVID for each entitlement, issuing those it lacks in
// one batch. The SVIDs come back in the entitlements' order; an entitlement
// that could not be served has a nil SVID and its error. A cached SVID still
// valid is served even when its renewal fails: only expiry takes it away.
func (c *cache) get(ctx context.Context, kind string, ents []entitlement, audiences []string, attrs map[string]string) ([]*svid, []error) {
	now := time.Now()
	out := make([]*svid, len(ents))
	errs := make([]error, len(ents))
	entries := make([]*entry, len(ents))
	var toIssue []*entry
	var waits []chan struct{}

	c.mu.Lock()
	for i, en := range ents {
		key := entryKey(kind, en, audiences)
		e := c.entries[key]
		if e == nil {
			e = &entry{key: key, kind: kind, ent: en, audiences: audiences, attrs: attrs}
			c.entries[key] = e
		}
		e.lastUsed = now
		entries[i] = e
		fresh := e.cur != nil && e.cur.valid(now)
		// JWT-SVIDs are renewed when asked for after half their life,
		// rather than in the background: they are minted per audience.
		if fresh && kind == authv1.SVIDTypeJWT && !now.Before(e.cur.renewAt()) && e.inflight == nil {
			fresh = false
			if now.Before(e.retryAt) {
				fresh = true // a renewal failed a moment ago: serve what we have
			}
		}
		switch {
		case fresh:
			out[i] = e.cur
		case e.cur == nil && e.lastErr != nil && now.Before(e.retryAt) && e.inflight == nil:
			// Refused or unreachable a moment ago: answer from that
			// rather than calling the auth service on every request.
			errs[i] = e.lastErr
		case e.inflight != nil:
			waits = append(waits, e.inflight)
		default:
			e.inflight = make(chan struct{})
			e.attrs = attrs
			toIssue = append(toIssue, e)
			waits = append(waits, e.inflight)
		}
	}
	c.mu.Unlock()

	// With something valid to serve, missing SVIDs are waited for only
	// for a while, and their issuance runs in the background: the caller
	// gets what is valid, and a stream gets the rest when their issuance
	// ends (it notifies c.changed). While the auth service is down that
	// while is short, so that an issuance an outage stalls for its whole
	// timeout does not hold back SVIDs that are valid.
	var grace <-chan time.Time
	hurry := len(waits) > 0 && slices.ContainsFunc(out, func(s *svid) bool { return s != nil })
	if hurry {
		d := pendingGraceUp
		if c.authDown != nil && c.authDown() {
			d = pendingGraceDown
		}
		t := time.NewTimer(d)
		defer t.Stop()
		grace = t.C
	}
	if len(toIssue) > 0 {
		if hurry {
			go c.issueEntries(context.WithoutCancel(ctx), toIssue)
		} else {
			c.issueEntries(context.WithoutCancel(ctx), toIssue)
		}
	}
wait:
	for _, w := range waits {
		select {
		case <-w:
		case <-grace:
			break wait
		case <-ctx.Done():
			for i := range ents {
				if out[i] == nil {
					errs[i] = ctx.Err()
				}
			}
			return out, errs
		}
	}
	now = time.Now()
	c.mu.Lock()
	for i, e := range entries {
		if out[i] != nil || errs[i] != nil {
			continue
		}
		if e.cur != nil && e.cur.valid(now) {
			out[i] = e.cur
			continue
		}
		errs[i] = e.lastErr
		if errs[i] == nil && e.inflight != nil {
			errs[i] = errIssuing
		}
		if errs[i] == nil {
			errs[i] = errors.New("no SVID was issued")
		}
	}
	c.mu.Unlock()
	return out, errs
}

// How long get waits for SVIDs being issued when it has others valid to
// serve: with the auth service up, long enough for any healthy issuance
// (callers get every SVID in one answer); with it down, short enough that
// the caller does not notice.
const (
	pendingGraceUp   = 5 * time.Second
	pendingGraceDown = 25 * time.Millisecond
)

// errIssuing is an SVID whose issuance has not ended yet.
var errIssuing = errors.New("its issuance has not ended yet")

// maxBatch bounds one IssueWorkloadSVIDs call; the auth service takes up
// to 2,000 items.
const maxBatch = 250

// issueEntries issues new SVIDs for entries (each with inflight set) and
// closes their inflight channels. Entries issued together for one workload
// share its attributes; a renewal batch may mix workloads, so it is split
// by attribute set.
func (c *cache) issueEntries(ctx context.Context, entries []*entry) {
	groups := map[string][]*entry{}
	var order []string
	for _, e := range entries {
		fp := fingerprint(e.attrs)
		if _, ok := groups[fp]; !ok {
			order = append(order, fp)
		}
		groups[fp] = append(groups[fp], e)
	}
	var g errgroup.Group
	g.SetLimit(4)
	var renewed atomic.Bool
	for _, fp := range order {
		list := groups[fp]
		for start := 0; start < len(list); start += maxBatch {
			batch := list[start:min(start+maxBatch, len(list))]
			g.Go(func() error {
				if c.issueBatch(ctx, batch) {
					renewed.Store(true)
				}
				return nil
			})
		}
	}
	_ = g.Wait()
	// Streams rebuild what they send once for the whole round rather than
	// once per batch: a workload holding many SVIDs gets one update.
	if renewed.Load() {
		c.changed.notify()
	}
}

// fingerprint is a canonical form of an attribute set.
func fingerprint(attrs map[string]string) string {
	keys := slices.Sorted(maps.Keys(attrs))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(attrs[k])
		b.WriteByte(0)
	}
	return b.String()
}

// issueBatch issues one batch; renewed says whether any SVID changed.
func (c *cache) issueBatch(ctx context.Context, batch []*entry) (renewed bool) {
	req := &authv1.IssueWorkloadSVIDsRequest{Attributes: batch[0].attrs, Svids: make([]*authv1.WorkloadSVIDRequest, len(batch))}
	keys := make([]crypto.Signer, len(batch))
	// Keys are made here, never by the auth service: only CSRs and public
	// keys leave the agent.
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, e := range batch {
		g.Go(func() error {
			item, key, err := newRequestItem(e)
			if err != nil {
				return err
			}
			req.Svids[i], keys[i] = item, key
			return nil
		})
	}
	var resp *authv1.IssueWorkloadSVIDsResponse
	err := g.Wait()
	sent := time.Now()
	if err == nil {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err = c.issue(callCtx, req)
		cancel()
		if err == nil && len(resp.GetResults()) != len(batch) {
			err = fmt.Errorf("the auth service answered %d of %d SVID requests", len(resp.GetResults()), len(batch))
		}
	}
	now := time.Now()
	if err == nil {
		c.checkSkew(resp, sent, now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range batch {
		var s *svid
		var itemErr error
		if err != nil {
			itemErr = &unavailableError{err}
		} else {
			s, itemErr = newSVID(e, resp.Results[i], keys[i], sent, now)
		}
		if itemErr != nil {
			e.renewedFor = ""
			e.lastErr = itemErr
			e.failures++
			e.retryAt = now.Add(backoff(e.failures))
			var d *denial
			if errors.As(itemErr, &d) {
				// A refusal stands until the auth service pushes a new
				// state (a role or identity changed): see resetRefusals.
				e.retryAt = now.Add(24 * time.Hour)
				if e.ent.identity != "" && d.check == checkNotSelected && e.cur != nil {
					// The identity was removed or is no longer selected
					// for this bot, and the state saying so is on its
					// way: stop serving it now rather than at expiry, and
					// let a CA rotation stop waiting on it. (A refusal by
					// rules is left to prune: it depends on which
					// workload last asked for a shared SVID.)
					e.cur = nil
					renewed = true
				}
			}
			c.metrics.renewal(e.kind, "error")
			c.logger.Warn("issuing SVID failed", "kind", e.kind, "spiffe_id", e.ent.id.String(), "error", itemErr)
		} else {
			e.cur, e.lastErr, e.failures, e.retryAt = s, nil, 0, time.Time{}
			if e.renewedFor != "" && s.signer != e.renewedFor {
				// Signed by another key than the one the renewal was for
				// (the CA moved on meanwhile): look again at once.
				e.renewedFor = ""
			}
			c.metrics.renewal(e.kind, "ok")
			renewed = true
		}
		close(e.inflight)
		e.inflight = nil
	}
	c.metrics.setCached(c.countLocked())
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return renewed
}

func newRequestItem(e *entry) (*authv1.WorkloadSVIDRequest, crypto.Signer, error) {
	item := &authv1.WorkloadSVIDRequest{Identity: e.ent.identity, Type: e.kind}
	if e.ent.identity == "" {
		// A config SVID or output: the agent's config says what an
		// identity's spec would (the auth service reads those itself).
		item.SpiffeId = e.ent.id.Path()
		item.DnsSans = e.ent.dnsSANs
		ttl := e.ent.x509TTL
		if e.kind == authv1.SVIDTypeJWT {
			ttl = e.ent.jwtTTL
		}
		item.TtlSeconds = int64(ttl / time.Second)
	}
	switch e.kind {
	case authv1.SVIDTypeJWT:
		item.Audience = e.audiences
		return item, nil, nil
	case authv1.SVIDTypeX509, authv1.SVIDTypeWIT:
		// Only the public key leaves the agent; the private key never does.
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("generating a key: %w", err)
		}
		item.PublicKey, err = x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return nil, nil, fmt.Errorf("encoding a public key: %w", err)
		}
		return item, key, nil
	}
	return nil, nil, fmt.Errorf("unknown SVID kind %q", e.kind)
}

// newSVID checks one answer and pairs it with its key. The request left at
// sent and the answer came at now, both on the agent's clock.
func newSVID(e *entry, r *authv1.WorkloadSVIDResult, key crypto.Signer, sent, now time.Time) (*svid, error) {
	if r.GetError() != "" {
		return nil, &denial{spiffeID: e.ent.id.String(), check: r.GetCheck(), reason: r.GetError()}
	}
	s := &svid{kind: e.kind, spiffeID: r.GetSpiffeId(), hint: e.ent.hint, serial: r.GetSerial(),
		issued: now, expires: r.GetExpiresAt().AsTime()}
	if r.GetHint() != "" {
		s.hint = r.GetHint()
	}
	if s.spiffeID != e.ent.id.String() {
		return nil, fmt.Errorf("the auth service issued %s where %s was asked for", s.spiffeID, e.ent.id)
	}
	switch e.kind {
	case authv1.SVIDTypeX509:
		if len(r.GetCertChain()) == 0 {
			return nil, fmt.Errorf("the auth service issued no certificate for %s", s.spiffeID)
		}
		leaf, err := x509.ParseCertificate(r.CertChain[0])
		if err != nil {
			return nil, fmt.Errorf("the certificate issued for %s does not parse: %w", s.spiffeID, err)
		}
		if !publicKeysEqual(leaf.PublicKey, key.Public()) {
			return nil, fmt.Errorf("the certificate issued for %s is not for the key the agent sent", s.spiffeID)
		}
		s.chain = r.CertChain
		for _, der := range r.CertChain {
			s.chainDER = append(s.chainDER, der...)
		}
		s.keyDER, err = x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding the key for %s: %w", s.spiffeID, err)
		}
		s.expires = minTime(s.expires, leaf.NotAfter)
		s.signer = hex.EncodeToString(leaf.AuthorityKeyId)
	case authv1.SVIDTypeJWT:
		if r.GetToken() == "" {
			return nil, fmt.Errorf("the auth service issued no token for %s", s.spiffeID)
		}
		s.token = r.Token
		s.signer = tokenKeyID(r.Token)
	case authv1.SVIDTypeWIT:
		if r.GetToken() == "" {
			return nil, fmt.Errorf("the auth service issued no token for %s", s.spiffeID)
		}
		s.token = r.Token
		s.signer = tokenKeyID(r.Token)
		jwk := jose.JSONWebKey{Key: key, Algorithm: string(jose.ES256), Use: "sig"}
		b, err := json.Marshal(jwk)
		if err != nil {
			return nil, fmt.Errorf("encoding the key for %s: %w", s.spiffeID, err)
		}
		s.keyJWK = string(b)
	}
	if at := r.GetIssuedAt(); at != nil {
		// The lifetime is the auth service's (expires_at minus issued_at,
		// both on its clock), counted on the agent's monotonic clock from
		// when the request left: a skewed or jumping wall clock neither
		// expires it early nor renews it late.
		s.issued, s.expires = sent, sent.Add(s.expires.Sub(at.AsTime()))
	}
	if !s.expires.After(now) {
		return nil, fmt.Errorf("the auth service issued an SVID for %s that has already expired", s.spiffeID)
	}
	return s, nil
}

// tokenAlgorithms are the algorithms a JWT-SVID or WIT-SVID may carry.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// tokenKeyID is the kid in a token's protected header; "" when it has none.
func tokenKeyID(token string) string {
	jws, err := jose.ParseSignedCompact(token, tokenAlgorithms)
	if err != nil || len(jws.Signatures) == 0 {
		return ""
	}
	return jws.Signatures[0].Protected.KeyID
}

// checkNotSelected is the auth service's refusal of an SVID whose workload
// identity does not exist or is not selected for the bot.
const checkNotSelected = "not_selected"

// prune drops the SVIDs of workload identities that st no longer gives the
// workload they were issued for: removed, no longer selected for the bot
// (the auth service pushes only the identities its roles select), or
// changed so that their rules or SPIFFE ID no longer fit. Such an SVID
// must not be served, nor renewed, nor hold back a CA rotation until it
// expires. Identities st keeps unchanged cost one lookup per entry.
func (c *cache) prune(st *state) {
	c.mu.Lock()
	c.st = st
	dropped := 0
	for key, e := range c.entries {
		if c.entitledLocked(e) {
			continue
		}
		delete(c.entries, key)
		if e.cur != nil {
			dropped++
		}
	}
	if dropped > 0 {
		c.metrics.setCached(c.countLocked())
	}
	c.mu.Unlock()
	if dropped > 0 {
		c.logger.Info("dropped the SVIDs of workload identities this agent no longer serves", "count", dropped)
		c.changed.notify()
	}
}

// entitledLocked reports whether e still serves an entitlement of the last
// pruned state, updating what the entitlement carries (hint, TTLs) when its
// identity changed but still gives the same SVID. An entry being issued is
// kept: its waiters read it, and the next look drops it.
func (c *cache) entitledLocked(e *entry) bool {
	if c.st == nil || e.inflight != nil {
		return true
	}
	if c.st.lockOf(e.ent.id, time.Now()) != nil {
		return false
	}
	// A revoked SVID is dropped, so the next look issues a new one.
	if e.cur != nil && c.st.revoked[e.cur.serial] {
		return false
	}
	// So is a JWT-SVID issued before its SPIFFE ID was revoked.
	if e.cur != nil && e.kind == authv1.SVIDTypeJWT && len(c.st.revokedIDs) > 0 {
		iat, ok := tokenIssuedAt(e.cur.token)
		if c.st.revokedJWT(e.ent.id, iat, ok, time.Now()) != "" {
			return false
		}
	}
	if e.ent.identity == "" {
		return true
	}
	h := c.st.identityNamed(e.ent.identity)
	switch {
	case h == nil:
		return false
	case h == e.ent.held:
		return true
	}
	w, err := h.workload()
	if err != nil {
		return false
	}
	en, miss := entitleOne(c.st.td, w, false, e.attrs)
	if miss != "" || en.key != e.ent.key {
		return false
	}
	en.held = h
	e.ent = en
	return true
}

// setSigners records the signing key of each SVID kind's CA; SVIDs signed
// by another key are renewed at once.
func (c *cache) setSigners(signers map[string]string) {
	c.mu.Lock()
	changed := !maps.Equal(c.signers, signers)
	c.signers = signers
	c.mu.Unlock()
	if changed {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// signedBy names, per SVID kind, the one key that signed every SVID the
// cache holds, or "" when several did or when an issuance is in flight (its
// answer may come from either key); kinds with no SVID are left out.
func (c *cache) signedBy() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := map[string]string{}
	unsure := map[string]bool{}
	for _, e := range c.entries {
		switch {
		case e.inflight != nil:
			unsure[e.kind] = true
		case e.cur == nil || !e.cur.valid(now):
		default:
			if prev, seen := out[e.kind]; seen && prev != e.cur.signer {
				unsure[e.kind] = true
			}
			out[e.kind] = e.cur.signer
		}
	}
	for kind := range unsure {
		out[kind] = ""
	}
	return out
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backoff is the jittered wait before retry n (1, 2, ...): from about a
// second, doubling, capped near 30 s.
func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 5)
	d = min(d, 30*time.Second)
	return d/2 + mrand.N(d/2+1)
}

// resetRefusals lets refused SVIDs be asked for again, and retries
// unreachable ones now: called when the auth service pushes a new state or
// comes back.
func (c *cache) resetRefusals() {
	c.mu.Lock()
	now := time.Now()
	for _, e := range c.entries {
		if e.lastErr != nil {
			e.retryAt = now
			e.failures = 0
		}
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// watch marks entries as held by a stream or output; unwatch releases them.
func (c *cache) watch(kind string, ents []entitlement, audiences []string, delta int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, en := range ents {
		if e := c.entries[entryKey(kind, en, audiences)]; e != nil {
			e.watchers = max(0, e.watchers+delta)
		}
	}
}

// pin keeps an entry fresh for as long as the agent runs (file outputs).
func (c *cache) pin(kind string, en entitlement, audiences []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := entryKey(kind, en, audiences)
	e := c.entries[key]
	if e == nil {
		e = &entry{key: key, kind: kind, ent: en, audiences: audiences, attrs: map[string]string{}}
		c.entries[key] = e
	}
	e.pinned = true
}

func (c *cache) countLocked() map[string]int {
	n := map[string]int{}
	for _, e := range c.entries {
		if e.cur != nil {
			n[e.kind]++
		}
	}
	return n
}

// Run renews wanted SVIDs at half their life (JWT-SVIDs excepted: see get),
// drops the unwanted, and drops any SVID the moment it expires so it is
// never served. Failed renewals retry with jittered backoff.
func (c *cache) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := c.renewDue(ctx)
		d := time.Until(next)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(d, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-c.kick:
		}
	}
}

// renewDue starts renewals that are due and returns when to look again.
func (c *cache) renewDue(ctx context.Context) time.Time {
	now := time.Now()
	next := now.Add(time.Hour)
	var due []*entry
	dropped := false
	c.mu.Lock()
	for key, e := range c.entries {
		if e.inflight != nil {
			continue
		}
		if e.cur != nil && !e.cur.valid(now) {
			e.cur = nil
			dropped = true
		}
		if !e.wanted(now) || !c.entitledLocked(e) {
			delete(c.entries, key)
			dropped = true
			continue
		}
		if want := c.signers[e.kind]; e.cur != nil && want != "" && e.cur.signer != want && e.renewedFor != want && !now.Before(e.retryAt) {
			// A CA rotation moved signing to another key: renew now, so
			// that the old key can leave the bundle.
			e.renewedFor = want
			e.inflight = make(chan struct{})
			due = append(due, e)
			continue
		}
		if e.kind == authv1.SVIDTypeJWT && !e.pinned {
			// Renewed on demand; only expiry is watched here.
			if e.cur != nil && e.cur.expires.Before(next) {
				next = e.cur.expires
			}
			continue
		}
		at := now
		if e.cur != nil {
			at = e.cur.renewAt()
			if e.cur.expires.Before(next) {
				next = e.cur.expires
			}
		}
		if e.retryAt.After(at) {
			at = e.retryAt
		}
		if !at.After(now) {
			e.inflight = make(chan struct{})
			due = append(due, e)
			continue
		}
		if at.Before(next) {
			next = at
		}
	}
	c.metrics.setCached(c.countLocked())
	c.mu.Unlock()
	if dropped {
		c.changed.notify()
	}
	if len(due) > 0 {
		slices.SortFunc(due, func(a, b *entry) int { return strings.Compare(a.key, b.key) })
		go c.issueEntries(ctx, due)
	}
	return next
}

// maxClockSkew is the gap between the agent's and the auth service's clocks
// beyond which the agent warns: SVIDs it hands out are checked by peers
// against their own clocks.
const maxClockSkew = 5 * time.Second

// checkSkew compares the auth service's issued_at with the middle of the
// call on the agent's clock, records it, and warns (at most every 10
// minutes) when the two clocks are further apart than maxClockSkew.
func (c *cache) checkSkew(resp *authv1.IssueWorkloadSVIDsResponse, sent, now time.Time) {
	for _, r := range resp.GetResults() {
		at := r.GetIssuedAt()
		if at == nil {
			continue
		}
		mid := sent.Add(now.Sub(sent) / 2)
		skew := at.AsTime().Sub(mid.Round(0))
		c.metrics.clockSkew.Set(skew.Seconds())
		if skew.Abs() > maxClockSkew {
			if n, ok := c.skewLog.allow(now); ok {
				c.logger.Warn("the agent's clock and the auth service's differ; SVID lifetimes are counted from the auth service's answer, but peers check them against their own clocks: synchronise this host's clock (NTP)",
					"auth_ahead_by", skew.Round(time.Millisecond), "answers_since_last_line", n)
			}
		}
		return
	}
}
