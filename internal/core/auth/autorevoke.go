package auth

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Automatic revocation: a lock revokes the X509-SVIDs it covers (those the
// locked user or bot asked for, those of the bots on a locked host, those
// of a locked SPIFFE ID), and a user reset or a bot removal also revokes
// the user's login or the bot's certificate. The revocations are written
// in the same transaction as the lock, the reset or the removal, so a
// crash leaves both or neither.
//
// A lock leaves the locked user's or bot's own certificate alone: the lock
// refuses it while it holds, and removing the lock restores service with
// no new login or join.
//
// Which certificates exist comes from the audit log, as for
// RevokeX509SVID: each issuance event has the serial, the SPIFFE ID, the
// principal (the actor) and the lifetime; none lives longer than a day.

// jwtRevocationKind holds SPIFFE IDs whose JWT-SVIDs issued before a time
// no longer validate on agents, by SPIFFE ID or lock target. No resource.
const jwtRevocationKind = "jwt_revocation"

// CAs of a revocation: an X509-SVID's is "" (the SPIFFE CA, listed in the
// CRLs); a login's and a bot certificate's are checked by this service.
const (
	revokedCAUser = "user"
	revokedCAHost = "host"
)

// issuedWindow bounds how far back the audit log is read for certificates
// still valid: no certificate wid issues lives longer than a day.
const issuedWindow = resource.MaxSVIDTTL + time.Minute

// jwtRevocation is a SPIFFE ID (or a lock target, covering what is under
// its path) whose JWT-SVIDs issued before RevokedAt are refused until
// Until, when the last of them has expired.
type jwtRevocation struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Prefix    bool      `json:"prefix,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	Until     time.Time `json:"until"`
	Reason    string    `json:"reason,omitempty"`
	Cause     string    `json:"cause,omitempty"`
}

// certQuery selects issued certificates in the audit log.
type certQuery struct {
	types []string
	// actor is the principal that asked for them, "" for any.
	actor string
	// id is the exact SPIFFE ID, "" for any.
	id string
	// keep, when set, filters further.
	keep func(*audit.Event) bool
}

// caOfEvent is the CA that signed the certificate an event of typ records.
func caOfEvent(typ string) string {
	switch typ {
	case audit.TypeLogin, audit.TypeUserCertRenewed:
		return revokedCAUser
	case audit.TypeJoin, audit.TypeBotCertRenewed:
		return revokedCAHost
	}
	return ""
}

// issuedCerts returns the certificates q selects that have not expired.
func (s *Server) issuedCerts(ctx context.Context, q certQuery) ([]revocation, error) {
	now := s.clock()
	rows, err := s.db.QueryAudit(ctx, store.AuditFilter{Types: q.types, Actor: q.actor, SPIFFEID: q.id, Since: now.Add(-issuedWindow)})
	if err != nil {
		return nil, err
	}
	var out []revocation
	for _, row := range rows {
		var ev audit.Event
		if err := json.Unmarshal(row.Data, &ev); err != nil || ev.Serial == "" || ev.Outcome != audit.OutcomeSuccess {
			continue
		}
		if q.keep != nil && !q.keep(&ev) {
			continue
		}
		// The event is recorded after signing: its time plus the TTL is at
		// or after the certificate's notAfter.
		notAfter := ev.Time.Add(time.Duration(ev.TTLSeconds) * time.Second)
		// An X509-SVID's event carries the certificate: its signing key
		// says which CRL lists it.
		var keyID string
		if der, err := base64.StdEncoding.DecodeString(ev.Details[audit.DetailCertificate]); err == nil && len(der) > 0 {
			if cert, err := x509.ParseCertificate(der); err == nil {
				keyID, notAfter = hex.EncodeToString(cert.AuthorityKeyId), cert.NotAfter
			}
		}
		if !notAfter.After(now) {
			continue
		}
		out = append(out, revocation{Serial: ev.Serial, SPIFFEID: ev.SPIFFEID, NotAfter: notAfter, CA: caOfEvent(ev.Type), CAKeyID: keyID})
	}
	return out, nil
}

// botsOnHost names the bots whose agents run on host: those connected here
// now, and those that joined or connected from it within a day.
func (s *Server) botsOnHost(ctx context.Context, host string) ([]string, error) {
	set := map[string]bool{}
	// The open streams here held to that host (see lockedStream).
	s.lockSt.streamsMu.Lock()
	for ls := range s.lockSt.streams {
		if ls.kind == KindBot && slices.Contains(ls.hosts, host) {
			set[ls.name] = true
		}
	}
	s.lockSt.streamsMu.Unlock()
	rows, err := s.db.QueryAudit(ctx, store.AuditFilter{Types: []string{audit.TypeJoin, audit.TypeAgentConnect}, Since: s.clock().Add(-issuedWindow)})
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		var ev audit.Event
		if err := json.Unmarshal(row.Data, &ev); err != nil || ev.Outcome != audit.OutcomeSuccess || agentHost(ev.Host) != host {
			continue
		}
		if bot, ok := strings.CutPrefix(ev.Actor, "bot:"); ok {
			set[bot] = true
		}
	}
	out := make([]string, 0, len(set))
	for b := range set {
		out = append(out, b)
	}
	sort.Strings(out)
	return out, nil
}

// revocationBatch is what one automatic revocation writes and audits.
type revocationBatch struct {
	certs []revocation
	jwt   *jwtRevocation
}

func (b *revocationBatch) empty() bool { return len(b.certs) == 0 && b.jwt == nil }

// lockRevocations are the certificates lock l covers, not yet revoked.
func (s *Server) lockRevocations(ctx context.Context, l *resource.Lock) (*revocationBatch, error) {
	t := l.Spec.Target
	x509Only := []string{audit.TypeX509SVIDIssued}
	var qs []certQuery
	switch {
	case t.User != "":
		qs = append(qs, certQuery{types: x509Only, actor: t.User})
	case t.Bot != "":
		qs = append(qs, certQuery{types: x509Only, actor: "bot:" + t.Bot})
	case t.Host != "":
		bots, err := s.botsOnHost(ctx, t.Host)
		if err != nil {
			return nil, err
		}
		for _, b := range bots {
			qs = append(qs, certQuery{types: x509Only, actor: "bot:" + b})
		}
	case t.SPIFFEID != "":
		covers := func(ev *audit.Event) bool {
			id, err := spiffeid.FromString(ev.SPIFFEID)
			return err == nil && resource.LockCoversSPIFFEID(t.SPIFFEID, id)
		}
		qs = append(qs, certQuery{types: x509Only, keep: covers})
		jwts, err := s.issuedCerts(ctx, certQuery{types: []string{audit.TypeJWTSVIDIssued}, keep: covers})
		if err != nil {
			return nil, err
		}
		b, err := s.collect(ctx, qs)
		if err != nil {
			return nil, err
		}
		b.jwt = jwtRevocationOf(t.SPIFFEID, true, jwts)
		return b, nil
	}
	return s.collect(ctx, qs)
}

// principalRevocations are the certificates of a user (kind KindUser) or a
// bot: its logins or bot certificates and the X509-SVIDs it asked for.
func (s *Server) principalRevocations(ctx context.Context, kind, name string) (*revocationBatch, error) {
	actor, own := name, []string{audit.TypeLogin, audit.TypeUserCertRenewed}
	if kind == KindBot {
		actor, own = "bot:"+name, []string{audit.TypeJoin, audit.TypeBotCertRenewed}
	}
	return s.collect(ctx, []certQuery{{types: append(own, audit.TypeX509SVIDIssued), actor: actor}})
}

// collect runs qs and leaves out serials already revoked, which keep the
// time they were first revoked at.
func (s *Server) collect(ctx context.Context, qs []certQuery) (*revocationBatch, error) {
	b := &revocationBatch{}
	seen := map[string]bool{}
	for _, q := range qs {
		certs, err := s.issuedCerts(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			if seen[c.Serial] {
				continue
			}
			seen[c.Serial] = true
			if _, err := s.db.Get(ctx, revocationKind, c.Serial); err == nil {
				continue
			}
			b.certs = append(b.certs, c)
		}
	}
	return b, nil
}

// jwtRevocationOf is the JWT revocation of target for the JWT-SVIDs
// issued, or nil when none is still valid.
func jwtRevocationOf(target string, prefix bool, issued []revocation) *jwtRevocation {
	var until time.Time
	for _, r := range issued {
		if r.NotAfter.After(until) {
			until = r.NotAfter
		}
	}
	if until.IsZero() {
		return nil
	}
	return &jwtRevocation{SPIFFEID: target, Prefix: prefix, Until: until}
}

// ops stamps the batch with now, reason and cause and gives its writes.
func (b *revocationBatch) ops(now time.Time, reason, cause string) ([]store.Op, error) {
	ops := make([]store.Op, 0, len(b.certs)+1)
	for i := range b.certs {
		r := &b.certs[i]
		r.RevokedAt, r.Reason, r.Cause = now, reason, cause
		data, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		ops = append(ops, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: revocationKind, Name: r.Serial, Data: data}})
	}
	if j := b.jwt; j != nil {
		j.RevokedAt, j.Reason, j.Cause = now, reason, cause
		data, err := json.Marshal(j)
		if err != nil {
			return nil, err
		}
		ops = append(ops, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: jwtRevocationKind, Name: j.SPIFFEID, Data: data}})
	}
	return ops, nil
}

// events are the audit events of the batch, after ops.
func (s *Server) revocationEvents(ctx context.Context, b *revocationBatch) []audit.Event {
	c := callerFrom(ctx)
	var out []audit.Event
	for _, r := range b.certs {
		ev := audit.Event{
			Type: audit.TypeX509SVIDRevoked, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
			SPIFFEID: r.SPIFFEID, Serial: r.Serial, Reason: r.Reason, Details: map[string]string{},
		}
		if r.Cause != "" {
			ev.Details["cause"] = r.Cause
		}
		if r.CA == "" {
			ev.SVIDType = authv1.SVIDTypeX509
		} else {
			ev.Details["ca"] = r.CA
		}
		out = append(out, ev)
	}
	if j := b.jwt; j != nil {
		out = append(out, audit.Event{
			Type: audit.TypeX509SVIDRevoked, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
			SPIFFEID: j.SPIFFEID, SVIDType: authv1.SVIDTypeJWT, Reason: j.Reason,
			Details: map[string]string{"issued_before": j.RevokedAt.UTC().Format(time.RFC3339Nano), "until": j.Until.UTC().Format(time.RFC3339)},
		})
		if j.Cause != "" {
			out[len(out)-1].Details["cause"] = j.Cause
		}
	}
	return out
}

// auditRevocations records the batch; the change it goes with is made.
func (s *Server) auditRevocations(ctx context.Context, b *revocationBatch, what string) error {
	if b == nil || b.empty() {
		return nil
	}
	if _, err := s.audit.EmitAll(ctx, s.revocationEvents(ctx, b)); err != nil {
		return fmt.Errorf("%s was made and its certificates revoked, but the revocations could not be audited: %w", what, err)
	}
	return nil
}

// internalRevoked is this replica's copy of the revoked logins and bot
// certificates, by serial, read on every authenticated call.
type internalRevoked struct {
	mu     sync.RWMutex
	loaded bool
	gen    uint64
	byKey  map[string]revocation
}

// revokedCert is the revocation of a login or bot certificate with serial,
// if there is one.
func (s *Server) revokedCert(ctx context.Context, serial string) (*revocation, error) {
	st := &s.revokedInt
	st.mu.RLock()
	m, loaded, gen := st.byKey, st.loaded, st.gen
	st.mu.RUnlock()
	if !loaded {
		items, err := s.db.List(ctx, revocationKind)
		if err != nil {
			return nil, err
		}
		m = map[string]revocation{}
		for _, it := range items {
			var r revocation
			if json.Unmarshal(it.Data, &r) == nil && r.CA != "" {
				m[r.Serial] = r
			}
		}
		st.mu.Lock()
		if st.gen == gen {
			st.byKey, st.loaded = m, true
		}
		st.mu.Unlock()
	}
	if r, ok := m[serial]; ok && r.NotAfter.After(s.clock()) {
		return &r, nil
	}
	return nil, nil
}

// forgetRevokedCerts drops the copy after a revocation changed.
func (s *Server) forgetRevokedCerts() {
	st := &s.revokedInt
	st.mu.Lock()
	st.gen++
	st.loaded, st.byKey = false, nil
	st.mu.Unlock()
}

// revokedCertError refuses a call made with a revoked certificate, which
// is audited.
func (s *Server) revokedCertError(ctx context.Context, r *revocation, kind, name, remote, method string) error {
	why := r.Cause
	if why == "" {
		why = r.Reason
	}
	msg := fmt.Sprintf("your certificate was revoked at %s (%s)", r.RevokedAt.UTC().Format(time.RFC3339), why)
	next, actor := authv1.NextLoginAgain, name
	if kind == KindBot {
		msg = fmt.Sprintf("the certificate of bot %q was revoked at %s (%s)", name, r.RevokedAt.UTC().Format(time.RFC3339), why)
		next, actor = authv1.NextRejoin, "bot:"+name
	}
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeAccessDenied, Actor: actor, RemoteAddr: remote, Reason: msg, Serial: r.Serial,
		Details: map[string]string{"method": method, "check": "revoked"},
	})
	return refusal(codes.Unauthenticated, msg, next, authv1.ErrorMetaName, name)
}

// agentRevokedIDs are the JWT revocations still in force, as agents apply
// them, in SPIFFE ID order.
func (s *Server) agentRevokedIDs() ([]*authv1.AgentRevokedID, error) {
	ctx, cancel := context.WithTimeout(context.Background(), changeReadTimeout)
	defer cancel()
	items, err := s.db.List(ctx, jwtRevocationKind)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var out []*authv1.AgentRevokedID
	for _, it := range items {
		var j jwtRevocation
		if err := json.Unmarshal(it.Data, &j); err != nil {
			s.log.Warn("a stored JWT revocation does not decode; it is skipped", "name", it.Name, "error", err)
			continue
		}
		if !j.Until.After(now) {
			continue
		}
		out = append(out, &authv1.AgentRevokedID{
			SpiffeId: j.SPIFFEID, Prefix: j.Prefix, RevokedAt: timestamppb.New(j.RevokedAt), Until: timestamppb.New(j.Until), Reason: j.Reason,
		})
	}
	return out, nil
}

// Causes of automatic revocations, as the audit log and refusals say them.
const (
	causeReset       = "user reset"
	causeUserRemoved = "user removed"
	causeBotRemoved  = "bot removed"
)

// causeLock is the cause of a revocation by lock name.
func causeLock(name string) string { return "lock " + name }

// lockRevocationOps are the revocations of what the locks in list cover
// (other resources are skipped), one batch per lock that holds.
func (s *Server) lockRevocationOps(ctx context.Context, list []resource.Resource) ([]*revocationBatch, []store.Op, error) {
	var (
		batches []*revocationBatch
		ops     []store.Op
	)
	now := s.clock()
	seen := map[string]bool{}
	for _, v := range list {
		l, ok := v.(*resource.Lock)
		if !ok || !l.Holds(now) {
			continue
		}
		b, err := s.lockRevocations(ctx, l)
		if err != nil {
			return nil, nil, storeError("the certificates lock "+l.Metadata.Name+" covers", err)
		}
		// Two locks of one file may cover one certificate: the first revokes it.
		kept := b.certs[:0]
		for _, c := range b.certs {
			if !seen[c.Serial] {
				seen[c.Serial] = true
				kept = append(kept, c)
			}
		}
		b.certs = kept
		o, err := b.ops(now, l.Spec.Reason, causeLock(l.Metadata.Name))
		if err != nil {
			return nil, nil, status.Error(codes.Internal, err.Error())
		}
		batches, ops = append(batches, b), append(ops, o...)
	}
	return batches, ops, nil
}
