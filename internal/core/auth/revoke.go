package auth

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// X.509 revocation: a revoked serial is kept in the store until its
// certificate expires, and listed in the CRL of the X.509 SPIFFE CA key
// that signed it. Every key in the bundle has its CRL: during a rotation
// the old key's certificates are still valid, so they can be revoked too.
// CRLs are built from the store when asked (cached briefly), so a crash
// mid-revoke leaves either the revocation stored and listed, or neither.
//
// Which serials exist, when they expire and which key signed them comes
// from the audit log: every X509-SVID issued is an event with its serial,
// TTL and certificate.

// revocationKind holds revoked X.509 serials, by serial, in the store. It is
// no resource: only RevokeX509SVID writes it.
const revocationKind = "x509_revocation"

// crlNumberKind holds, by CA key ID, the last crlNumber a CRL of that key
// was given, so that the numbers only grow, across restarts and replicas.
const crlNumberKind = "crl_number"

// maxCRLKeyID bounds the key ID a /crl/ request names: a hex subject key
// ID is 40 characters; more is not a key of ours.
const maxCRLKeyID = 64

// crlLifetime bounds a CRL's nextUpdate: relying parties fetch again
// within it.
const crlLifetime = time.Hour

// crlMaxAge is how long a built CRL is served before it is built again: a
// revocation on this replica drops it at once; one on another replica is
// listed here within crlMaxAge.
const crlMaxAge = 10 * time.Second

// maxRevokeReason bounds a revocation's reason.
const maxRevokeReason = 1024

// revocation is one revoked serial as stored.
type revocation struct {
	Serial    string    `json:"serial"`
	SPIFFEID  string    `json:"spiffe_id"`
	NotAfter  time.Time `json:"not_after"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
	// CAKeyID is the hex subject key ID of the CA key that signed the
	// certificate; empty in revocations stored before it was recorded,
	// which every key's CRL lists.
	CAKeyID string `json:"ca_key_id,omitempty"`
	// CA is "" for an X509-SVID; revokedCAUser or revokedCAHost for a
	// login or a bot certificate, which no CRL lists (see autorevoke.go).
	CA string `json:"ca,omitempty"`
	// Cause says what revoked it when it was not svid revoke: a lock, a
	// user reset, a bot removal.
	Cause string `json:"cause,omitempty"`
}

// crlCache is the last CRLs built.
type crlCache struct {
	mu    sync.Mutex
	built time.Time
	crls  []*authv1.CRL
	// keys names the CA keys the CRLs were built for: a CA change that
	// adds or drops a key builds them again.
	keys string
	// numbers are the last crlNumbers used here, by CA key ID: the floor
	// when the store cannot record one.
	numbers map[string]int64
}

// issuedX509 returns the unexpired X509-SVIDs the audit log records, of id
// when it is set, by serial when it is set.
func (s *Server) issuedX509(ctx context.Context, id, serial string) ([]revocation, error) {
	q := certQuery{types: []string{audit.TypeX509SVIDIssued}, id: id}
	if serial != "" {
		q.keep = func(ev *audit.Event) bool { return ev.Serial == serial }
	}
	return s.issuedCerts(ctx, q)
}

// normalizeSerial takes a serial as people copy it (hex, with or without
// colons or 0x) and gives it as the audit log records it.
func normalizeSerial(s string) (string, error) {
	s = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(s), "0x"))
	s = strings.ReplaceAll(s, ":", "")
	if s == "" || len(s) > 40 {
		return "", errors.New("is not a certificate serial")
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		return "", errors.New("is not a certificate serial")
	}
	return ca.FormatSerial(n), nil
}

func (s *Server) RevokeX509SVID(ctx context.Context, req *authv1.RevokeX509SVIDRequest) (*authv1.RevokeX509SVIDResponse, error) {
	if err := s.authorize(ctx, resource.ResourceSVID, verbDelete); err != nil {
		return nil, err
	}
	if (req.Serial == "") == (req.SpiffeId == "") {
		return nil, status.Error(codes.InvalidArgument, "give exactly one of a serial or a SPIFFE ID to revoke")
	}
	if len(req.Reason) > maxRevokeReason {
		return nil, status.Errorf(codes.InvalidArgument, "the reason is %d bytes long, over the limit of %d: shorten it", len(req.Reason), maxRevokeReason)
	}
	var (
		serial, id string
		what       string
	)
	if req.Serial != "" {
		n, err := normalizeSerial(req.Serial)
		if err != nil {
			return nil, refusal(codes.InvalidArgument, fmt.Sprintf("%q %v", clip(req.Serial), err), authv1.NextSerialHex)
		}
		serial, what = n, "serial "+n
	} else {
		parsed, err := resource.ParseSPIFFEID(s.td, req.SpiffeId)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		id, what = parsed.String(), parsed.String()
	}
	issued, err := s.issuedX509(ctx, id, serial)
	if err != nil {
		return nil, storeError("the issued SVIDs", err)
	}
	// Revoking takes SVIDs away from their workloads: only who may issue
	// them may.
	ids := []string{id}
	if serial != "" {
		ids = ids[:0]
		for _, r := range issued {
			ids = append(ids, r.SPIFFEID)
		}
	}
	if err := s.checkSPIFFEReach(ctx, "revoke "+what, "svid/"+serial+id, ids...); err != nil {
		return nil, err
	}
	// Revoking a SPIFFE ID also refuses its JWT-SVIDs issued until now,
	// on every agent, until the last of them expires.
	var jwt *jwtRevocation
	if id != "" {
		jwts, err := s.issuedCerts(ctx, certQuery{types: []string{audit.TypeJWTSVIDIssued}, id: id})
		if err != nil {
			return nil, storeError("the issued SVIDs", err)
		}
		jwt = jwtRevocationOf(id, false, jwts)
	}
	if len(issued) == 0 && jwt == nil {
		if serial != "" {
			return nil, refusal(codes.NotFound, fmt.Sprintf("no unexpired X509-SVID with serial %s was issued", serial), authv1.NextCheckSerial)
		}
		return nil, status.Errorf(codes.NotFound, "no unexpired X509-SVID or JWT-SVID of %s was issued, so there is nothing to revoke", id)
	}
	now := s.clock()
	ops := make([]store.Op, 0, len(issued)+1)
	resp := &authv1.RevokeX509SVIDResponse{}
	for _, r := range issued {
		r.RevokedAt, r.Reason = now, req.Reason
		b, err := json.Marshal(r)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		ops = append(ops, store.Op{Type: store.OpUpsert, Item: store.Item{Kind: revocationKind, Name: r.Serial, Data: b}})
		resp.Revoked = append(resp.Revoked, &authv1.RevokedSerial{Serial: r.Serial, SpiffeId: r.SPIFFEID, ExpiresAt: timestamppb.New(r.NotAfter)})
	}
	jb := &revocationBatch{jwt: jwt}
	jops, err := jb.ops(now, req.Reason, "")
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if _, err := s.db.Apply(ctx, append(ops, jops...)...); err != nil {
		return nil, storeError("the revocation of "+what, err)
	}
	s.revocationsChanged(ctx)
	c := callerFrom(ctx)
	events := make([]audit.Event, len(issued))
	for i, r := range issued {
		events[i] = audit.Event{
			Type: audit.TypeX509SVIDRevoked, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
			SPIFFEID: r.SPIFFEID, SVIDType: authv1.SVIDTypeX509, Serial: r.Serial, Reason: req.Reason,
		}
	}
	events = append(events, s.revocationEvents(ctx, jb)...)
	if jwt != nil {
		resp.JwtIssuedBefore, resp.JwtRefusedUntil = timestamppb.New(jwt.RevokedAt), timestamppb.New(jwt.Until)
	}
	if _, err := s.audit.EmitAll(ctx, events); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the SVIDs were revoked but the revocation could not be audited: %v", err)
	}
	return resp, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// revocations returns the stored revocations of X509-SVIDs whose
// certificates have not expired, by serial.
func (s *Server) revocations(ctx context.Context) ([]revocation, error) {
	items, err := s.db.List(ctx, revocationKind)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	out := make([]revocation, 0, len(items))
	for _, it := range items {
		var r revocation
		if err := json.Unmarshal(it.Data, &r); err != nil {
			s.log.Warn("a stored revocation does not decode; it is skipped", "serial", it.Name, "error", err)
			continue
		}
		if r.NotAfter.After(now) && r.CA == "" {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Serial < out[j].Serial })
	return out, nil
}

// CRLs returns a signed CRL for each X.509 CA key in the bundle, each
// listing the revoked serials that key signed and that have not expired,
// built at most crlMaxAge ago.
func (s *Server) CRLs(ctx context.Context) ([]*authv1.CRL, error) {
	var keys []*ca.KeySet
	for _, k := range s.cas.KeySets(ca.TypeSPIFFE) {
		if k.Cert != nil && k.Signer != nil {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("the X.509 CA has no signing key here")
	}
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.SignerID()
	}
	keyNames := strings.Join(ids, ",")

	s.crl.mu.Lock()
	defer s.crl.mu.Unlock()
	now := s.clock()
	if s.crl.crls != nil && s.crl.keys == keyNames && now.Sub(s.crl.built) < crlMaxAge {
		return s.crl.crls, nil
	}
	revs, err := s.revocations(ctx)
	if err != nil {
		return nil, err
	}
	crls := make([]*authv1.CRL, 0, len(keys))
	for i, k := range keys {
		entries := make([]x509.RevocationListEntry, 0, len(revs))
		for _, r := range revs {
			if r.CAKeyID != "" && r.CAKeyID != ids[i] {
				continue
			}
			n, ok := new(big.Int).SetString(r.Serial, 16)
			if !ok {
				continue
			}
			entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt})
		}
		number, err := s.nextCRLNumber(ctx, ids[i], now)
		if err != nil {
			return nil, err
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number:                    big.NewInt(number),
			ThisUpdate:                now.Add(-time.Minute),
			NextUpdate:                now.Add(crlLifetime),
			RevokedCertificateEntries: entries,
		}, k.Cert, k.Signer)
		if err != nil {
			return nil, fmt.Errorf("signing the CRL of CA key %s: %w", ids[i], err)
		}
		crls = append(crls, &authv1.CRL{CaKeyId: ids[i], Der: der})
	}
	s.crl.built, s.crl.keys, s.crl.crls = now, keyNames, crls
	return crls, nil
}

// nextCRLNumber gives the next CRL of CA key keyID its crlNumber, greater
// than any that key's CRLs had, as RFC 5280 requires. The last one is kept
// in the store, taken with a compare-and-set so that replicas never give
// two CRLs the same number; it starts from the clock, so that a store
// restored from a backup does not go back either. Call with s.crl.mu held.
func (s *Server) nextCRLNumber(ctx context.Context, keyID string, now time.Time) (int64, error) {
	if s.crl.numbers == nil {
		s.crl.numbers = map[string]int64{}
	}
	floor := max(now.UnixMicro(), s.crl.numbers[keyID]+1)
	for range 5 {
		op := store.Op{Type: store.OpCreate, Item: store.Item{Kind: crlNumberKind, Name: keyID}}
		n := floor
		it, err := s.db.Get(ctx, crlNumberKind, keyID)
		switch {
		case err == nil:
			last, perr := strconv.ParseInt(string(it.Data), 10, 64)
			if perr != nil {
				return 0, fmt.Errorf("the stored crlNumber of CA key %s does not decode: %w", keyID, perr)
			}
			n = max(n, last+1)
			op.Type, op.ExpectRevision = store.OpUpdate, it.Revision
		case !errors.Is(err, store.ErrNotFound):
			return 0, fmt.Errorf("reading the crlNumber of CA key %s: %w", keyID, err)
		}
		op.Item.Data = []byte(strconv.FormatInt(n, 10))
		_, err = s.db.Apply(ctx, op)
		switch {
		case err == nil:
			s.crl.numbers[keyID] = n
			return n, nil
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrAlreadyExists):
			// Another replica took one meanwhile: read it again.
			continue
		}
		// A store that takes no writes still gets CRLs, numbered from the
		// clock and this process's last: relying parties that stop getting
		// CRLs would refuse every peer once theirs expires.
		s.log.Warn("the CRL number cannot be recorded; it is taken from the clock", "ca_key_id", keyID, "error", err)
		s.crl.numbers[keyID] = n
		return n, nil
	}
	return 0, fmt.Errorf("taking a crlNumber for CA key %s: other replicas kept taking it first", keyID)
}

func (s *Server) GetCRLs(ctx context.Context, _ *authv1.GetCRLsRequest) (*authv1.GetCRLsResponse, error) {
	if callerFrom(ctx).Kind == "" {
		return nil, refusal(codes.Unauthenticated, "reading the CRLs needs a login", authv1.NextLogin)
	}
	crls, err := s.CRLs(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "building the CRLs: %v", err)
	}
	return &authv1.GetCRLsResponse{Crls: crls}, nil
}

// CRLHandler serves /crl/<ca key id>.crl: the DER CRL of that X.509 CA key.
// It is public, as the bundle is: a CRL holds nothing secret.
func (s *Server) CRLHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "a CRL is only read: use GET", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/crl/")
		keyID, ok := strings.CutSuffix(name, ".crl")
		if !ok || keyID == "" || len(keyID) > maxCRLKeyID || strings.Trim(keyID, "0123456789abcdef") != "" {
			http.Error(w, "not found: ask for /crl/<ca key id>.crl", http.StatusNotFound)
			return
		}
		crls, err := s.CRLs(r.Context())
		if err != nil {
			http.Error(w, "the CRL cannot be built now", http.StatusServiceUnavailable)
			return
		}
		for _, c := range crls {
			if c.CaKeyId == keyID {
				w.Header().Set("Content-Type", "application/pkix-crl")
				w.Write(c.Der)
				return
			}
		}
		http.Error(w, "no X.509 CA key has that id", http.StatusNotFound)
	})
}

// revocationsChanged drops the CRL built, after a revocation here or on
// another replica (seen in the change log), and sends agents the new one.
func (s *Server) revocationsChanged(ctx context.Context) {
	s.crl.mu.Lock()
	s.crl.crls = nil
	s.crl.mu.Unlock()
	s.forgetRevokedCerts()
	s.agentChanged(ctx, feedKindCA, "")
}

// agentCRLs are the CRLs as agents get them (DER).
func (s *Server) agentCRLs() ([][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), changeReadTimeout)
	defer cancel()
	crls, err := s.CRLs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(crls))
	for i, c := range crls {
		out[i] = c.Der
	}
	return out, nil
}

// refreshAgentCRLs sends agents a fresh CRL well before the one they hold
// reaches its next update: a relying party that checks CRLs refuses every
// peer once its CRL has expired.
func (s *Server) refreshAgentCRLs(ctx context.Context) error {
	t := time.NewTicker(crlLifetime / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.revocationsChanged(ctx)
		}
	}
}
