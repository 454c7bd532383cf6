package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bounds of the attestation log. The queue holds what the auth service has
// not yet taken, across an outage; seen remembers which process instances
// were already recorded with which result.
const (
	maxQueuedAttestations = 100_000
	maxSeenAttestations   = 100_000
	attestationBatch      = 1_000
)

// attestLog records each distinct attestation once and ships the records to
// the auth service in batches, keeping them through an outage. A record
// stays queued until the auth service has answered that it is durable; a
// batch sent again after a lost answer carries the same ids, which the auth
// service records once.
type attestLog struct {
	logger *slog.Logger

	mu      sync.Mutex
	queue   []*authv1.Attestation
	dropped int
	seen    map[string]struct{}
	order   []string
	wake    chan struct{}
	// retry cuts a backoff short: the auth service is reachable again.
	retry chan struct{}
}

func newAttestLog(logger *slog.Logger) *attestLog {
	return &attestLog{logger: logger, seen: map[string]struct{}{}, wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
}

// record queues an attestation unless one with the same key (the same
// process instance and binary, given the same identities) was recorded. A
// workload calling a thousand times is one attestation, not a thousand
// events; a new process, a new binary or a changed result is a new one.
// A denial is logged too, once per record, with its reason: the caller
// itself is told only that it got nothing.
func (l *attestLog) record(key string, method string, attrs map[string]string, ids []string, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[key]; ok {
		return
	}
	if len(ids) == 0 {
		l.logger.Info("no identity issued", "method", method, "pid", attrs[attest.AttrPID], "uid", attrs[attest.AttrUID], "path", attrs[attest.AttrPath], "reason", reason)
	}
	if len(l.order) >= maxSeenAttestations {
		delete(l.seen, l.order[0])
		l.order = l.order[1:]
	}
	l.seen[key] = struct{}{}
	l.order = append(l.order, key)

	outcome := "success"
	if len(ids) == 0 {
		outcome = "denied"
	}
	if len(l.queue) >= maxQueuedAttestations {
		// Bounded memory beats an agent that dies of an outage: drop the
		// oldest and say so.
		l.queue = l.queue[1:]
		l.dropped++
		if l.dropped == 1 || l.dropped%1000 == 0 {
			l.logger.Error("attestation records dropped while the auth service is unreachable", "dropped", l.dropped)
		}
	}
	l.queue = append(l.queue, &authv1.Attestation{
		Id: newID(), Time: timestamppb.Now(), Attributes: attrs, SpiffeIds: ids,
		Outcome: outcome, Reason: reason, Method: method,
	})
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// retryNow ends a backoff at once: a state arrived from the auth service,
// so records held through an outage go now rather than up to 30s later.
func (l *attestLog) retryNow() {
	select {
	case l.retry <- struct{}{}:
	default:
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run ships queued records until ctx ends.
func (l *attestLog) Run(ctx context.Context, send func(context.Context, []*authv1.Attestation) error) error {
	failures := 0
	for {
		l.mu.Lock()
		batch := l.queue[:min(len(l.queue), attestationBatch)]
		l.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-l.wake:
				continue
			}
		}
		err := send(ctx, batch)
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.InvalidArgument {
			// Refused for what it holds, not for a passing fault: sending
			// it again would be refused again and hold up every later
			// record. The auth service audited the refusal.
			l.logger.Error("the auth service refused a batch of attestation records; dropping it", "records", len(batch), "error", status.Convert(err).Message())
			err = nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			failures++
			wait := backoff(failures)
			l.logger.Warn("recording attestations failed; keeping them and retrying", "queued", l.queued(), "error", err, "retry_in", wait.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			case <-l.retry:
				failures = 0
			}
			continue
		}
		failures = 0
		l.mu.Lock()
		// Only records from the front were sent; drops while sending
		// removed from the front too, so count what is still there.
		n := 0
		for n < len(batch) && n < len(l.queue) && l.queue[n] == batch[n] {
			n++
		}
		l.queue = l.queue[n:]
		l.mu.Unlock()
	}
}

func (l *attestLog) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}
