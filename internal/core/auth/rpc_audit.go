package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const resourceAudit = "audit"

func auditQuery(q *authv1.AuditQuery) audit.Query {
	if q == nil {
		return audit.Query{}
	}
	out := audit.Query{Types: q.Types, Actor: q.Actor, SPIFFEID: q.SpiffeId, Outcome: q.Outcome, AfterSeq: q.AfterSeq, BeforeSeq: q.BeforeSeq, Limit: int(q.Limit)}
	if q.Since != nil {
		out.Since = q.Since.AsTime()
	}
	if q.Until != nil {
		out.Until = q.Until.AsTime()
	}
	return out
}

// EventToProto converts an audit event for the wire.
func EventToProto(e audit.Event) *authv1.AuditEvent {
	return &authv1.AuditEvent{
		Seq: e.Seq, Time: timestamppb.New(e.Time), Type: e.Type, Actor: e.Actor, Host: e.Host, RemoteAddr: e.RemoteAddr,
		SpiffeId: e.SPIFFEID, SvidType: e.SVIDType, Serial: e.Serial, TtlSeconds: e.TTLSeconds,
		DnsSans: e.DNSSANs, IpSans: e.IPSANs, Attributes: e.Attributes, Outcome: e.Outcome, Reason: e.Reason,
		Resource: e.Resource, Details: e.Details, PrevHash: e.PrevHash, Hash: e.Hash,
	}
}

// EventFromProto is the inverse of EventToProto.
func EventFromProto(p *authv1.AuditEvent) audit.Event {
	return audit.Event{
		Seq: p.Seq, Time: p.Time.AsTime(), Type: p.Type, Actor: p.Actor, Host: p.Host, RemoteAddr: p.RemoteAddr,
		SPIFFEID: p.SpiffeId, SVIDType: p.SvidType, Serial: p.Serial, TTLSeconds: p.TtlSeconds,
		DNSSANs: p.DnsSans, IPSANs: p.IpSans, Attributes: p.Attributes, Outcome: p.Outcome, Reason: p.Reason,
		Resource: p.Resource, Details: p.Details, PrevHash: p.PrevHash, Hash: p.Hash,
	}
}

func (s *Server) ListAuditEvents(ctx context.Context, req *authv1.ListAuditEventsRequest) (*authv1.ListAuditEventsResponse, error) {
	if err := s.authorize(ctx, resourceAudit, verbList); err != nil {
		return nil, err
	}
	evs, err := s.audit.Query(ctx, auditQuery(req.Query))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the audit log: %v", err)
	}
	return auditAnswer(evs, maxAuditAnswer), nil
}

// maxAuditAnswer keeps a ListAuditEvents answer well under gRPC's default
// 4 MiB message limit, whatever the log holds and however many events are
// asked for; the caller pages back with next_before_seq.
const maxAuditAnswer = 3 << 20

// maxWireAuditField bounds one string of an event on the wire. Events are
// bounded when written (see limits.go), but a log written before that may
// hold megabytes in one field; such a field is cut, and the event says so.
const maxWireAuditField = 64 << 10

// auditAnswer is the newest of evs (oldest first) that fit in budget
// bytes, and where to page back from when some were left out. At least
// one event is always answered, so paging always moves.
func auditAnswer(evs []audit.Event, budget int) *authv1.ListAuditEventsResponse {
	resp := &authv1.ListAuditEventsResponse{}
	size, first := 0, len(evs)
	for i := len(evs) - 1; i >= 0; i-- {
		p := EventToProto(evs[i])
		cutLongFields(p)
		n := proto.Size(p) + 8
		if size+n > budget && first < len(evs) {
			resp.NextBeforeSeq = evs[first].Seq
			break
		}
		size += n
		first = i
		resp.Events = append(resp.Events, p)
	}
	slices.Reverse(resp.Events)
	return resp
}

// cutLongFields shortens strings over maxWireAuditField, noting it in the
// details (the event's hash then no longer matches: audit verify checks the
// stored events, not this copy).
func cutLongFields(p *authv1.AuditEvent) {
	cut := false
	clip := func(s *string) {
		if len(*s) > maxWireAuditField {
			*s = (*s)[:maxWireAuditField]
			cut = true
		}
	}
	for _, s := range []*string{&p.Type, &p.Actor, &p.Host, &p.RemoteAddr, &p.SpiffeId, &p.SvidType, &p.Serial, &p.Outcome, &p.Reason, &p.Resource} {
		clip(s)
	}
	for _, list := range [][]string{p.DnsSans, p.IpSans} {
		for i := range list {
			clip(&list[i])
		}
	}
	for _, m := range []map[string]string{p.Attributes, p.Details} {
		for k, v := range m {
			if len(k) > maxWireAuditField {
				delete(m, k)
				cut = true
				continue
			}
			clip(&v)
			m[k] = v
		}
	}
	if cut {
		if p.Details == nil {
			p.Details = map[string]string{}
		}
		p.Details["wire_truncated"] = fmt.Sprintf("fields over %d bytes were cut for this answer", maxWireAuditField)
	}
}

func (s *Server) StreamAuditEvents(req *authv1.StreamAuditEventsRequest, stream authv1.AuthService_StreamAuditEventsServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if err := s.authorize(ctx, resourceAudit, verbList); err != nil {
		return err
	}
	// A stop drains RPCs before the audit log stops, so a follower must end
	// itself when the stop begins instead of holding up the drain.
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	q := auditQuery(req.Query)
	backlog := int(req.Backlog)
	for {
		ch, err := s.audit.Subscribe(ctx, q, backlog)
		if err != nil {
			return status.Errorf(codes.Internal, "following the audit log: %v", err)
		}
		for e := range ch {
			p := EventToProto(e)
			cutLongFields(p)
			if err := stream.Send(p); err != nil {
				return err
			}
			q.AfterSeq = e.Seq
		}
		if err := ctx.Err(); err != nil {
			select {
			case <-s.stopping:
				return status.Error(codes.Unavailable, "the auth service is stopping: follow the audit log again once it is back")
			default:
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return status.FromContextError(err).Err()
		}
		// The subscription was dropped because this stream fell behind:
		// resume after the last event sent (backlog < 0 means everything
		// after AfterSeq), so nothing is lost or repeated.
		backlog = -1
		q.Limit = 0
	}
}

// maxHeadHash bounds the exported head's hash a caller sends (a hex SHA-256
// is 64 characters).
const maxHeadHash = 128

func (s *Server) VerifyAudit(ctx context.Context, req *authv1.VerifyAuditRequest) (*authv1.VerifyAuditResponse, error) {
	if err := s.authorize(ctx, resourceAudit, verbRead); err != nil {
		return nil, err
	}
	if req.HeadSeq < 0 || len(req.HeadHash) > maxHeadHash || (req.HeadSeq > 0) != (req.HeadHash != "") {
		return nil, refusal(codes.InvalidArgument, "the head to check against needs a positive seq and a hash of at most 128 characters", authv1.NextAuditHead)
	}
	// The anchor lives outside the store, under the key encryption key's
	// protection: a store rewritten whole, head row included, still has
	// to contain the event it records.
	anchoredSeq, anchoredHash := s.anchor.Anchored()
	heads := []audit.Head{{Seq: anchoredSeq, Hash: anchoredHash, Source: "the trust domain's anchor (keys/anchor)"}}
	if req.HeadSeq > 0 {
		heads = append(heads, audit.Head{Seq: req.HeadSeq, Hash: req.HeadHash, Source: "the head you gave"})
	}
	rep, err := s.audit.Verify(ctx, heads...)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "verifying the audit log: %v", err)
	}
	resp := &authv1.VerifyAuditResponse{
		Ok: len(rep.Problems) == 0, Events: rep.Events, HeadHash: rep.HeadHash, HeadSeq: rep.HeadSeq,
		AnchoredSeq: anchoredSeq, AnchoredHash: anchoredHash,
	}
	for _, p := range rep.Problems {
		resp.Problems = append(resp.Problems, &authv1.AuditProblem{Seq: p.Seq, Kind: p.Kind, Message: p.Message})
	}
	return resp, nil
}
