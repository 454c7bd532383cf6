package tui

import (
	"context"
	"errors"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	authclient "github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Backlog is how many past audit events the dashboard shows on start.
const Backlog = 500

// Messages the feed sends to the model. Errors travel as messages too.
type (
	// ConnectedMsg: the auth service answered Ping.
	ConnectedMsg struct{ Ping *authv1.PingResponse }
	// ReconnectingMsg: the connection or a stream failed; the feed retries.
	ReconnectingMsg struct{ Err error }
	// EventMsg is one audit event, in sequence order.
	EventMsg struct{ Event *authv1.AuditEvent }
	// BundleMsg is the trust bundle as GetBundle returned it.
	BundleMsg struct{ Bundle *authv1.GetBundleResponse }
	// CAsMsg is every CA with its rotation, as ListCAs returned them; Err
	// when the caller may not list CAs (the tab then shows the bundle only).
	CAsMsg struct {
		CAs []*authv1.CAInfo
		Err error
	}
	// ResourcesMsg is a list of resources of one kind, as ListResources
	// returned them; Err when the caller may not list that kind.
	ResourcesMsg struct {
		Kind      string
		Resources [][]byte
		Err       error
	}
	// AuditDeniedMsg: the caller's roles do not let it read the audit log,
	// so the SVIDs and Attestations tabs have nothing to show. The feed
	// does not ask again (each refusal is itself an audit event); it keeps
	// the rest of the dashboard fresh by asking every PollInterval.
	AuditDeniedMsg struct{ Err error }
)

// Feed reads the auth service for the dashboard: Ping, the bundle, the roles
// and the audit log (a backlog, then live), and hands the model messages on
// a channel, so that Update never blocks on the network.
type Feed struct {
	client   authv1.AuthServiceClient
	ch       chan tea.Msg
	explains chan *authv1.ExplainRequest
	// MinBackoff and MaxBackoff bound the wait between reconnects.
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is how often the bundle and resources are read again
	// when there is no audit stream to say they changed.
	PollInterval time.Duration

	// denied holds what the caller was refused ("audit", "ca", or a
	// resource kind), so that it is asked once, not on every refresh or
	// reconnect. Only Run's goroutine touches it.
	denied map[string]bool
}

// NewFeed returns a feed over c. Run starts it.
func NewFeed(c authv1.AuthServiceClient) *Feed {
	return &Feed{client: c, ch: make(chan tea.Msg, 1024), explains: make(chan *authv1.ExplainRequest, 1), MinBackoff: 250 * time.Millisecond, MaxBackoff: 5 * time.Second,
		PollInterval: 5 * time.Second, denied: map[string]bool{}}
}

// Messages is where the feed's messages arrive.
func (f *Feed) Messages() <-chan tea.Msg { return f.ch }

// bundleEvent says whether an audit event may have changed the bundle or
// the CAs: the Bundles tab calls GetBundle and ListCAs on start and again
// whenever such an event arrives, so a rotation shows as it moves.
func bundleEvent(typ string) bool {
	return typ == "ca.rotation" || typ == "trust_domain.created" || typ == "auth.started"
}

func resourceEvent(typ string) bool {
	return typ == "resource.created" || typ == "resource.updated" || typ == "resource.deleted"
}

// Run follows the auth service until ctx ends. On any error it reports
// ReconnectingMsg, waits with a growing backoff, and resumes the audit
// stream after the last sequence number seen: no event twice, none lost.
func (f *Feed) Run(ctx context.Context) error {
	go f.explainLoop(ctx)
	var lastSeq int64
	backoff := f.MinBackoff
	for {
		progressed, err := f.session(ctx, &lastSeq)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			backoff = f.MinBackoff
		}
		if err == nil {
			err = errors.New("the audit stream ended")
		}
		if !f.send(ctx, ReconnectingMsg{Err: err}) {
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, f.MaxBackoff)
	}
}

// session is one connection: it returns when the stream fails. progressed
// says whether the auth service answered at all.
func (f *Feed) session(ctx context.Context, lastSeq *int64) (bool, error) {
	ping, err := f.client.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return false, err
	}
	if f.denied["audit"] {
		if !f.send(ctx, ConnectedMsg{Ping: ping}) {
			return true, nil
		}
		return true, f.poll(ctx)
	}
	req := &authv1.StreamAuditEventsRequest{Query: &authv1.AuditQuery{}, Backlog: Backlog}
	if *lastSeq > 0 {
		// Everything after the last event shown, however many; until one
		// is shown, the backlog again (not the whole log).
		req.Query.AfterSeq = *lastSeq
		req.Backlog = -1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.client.StreamAuditEvents(ctx, req)
	if err != nil && status.Code(err) != codes.PermissionDenied {
		return false, err
	}
	if !f.send(ctx, ConnectedMsg{Ping: ping}) {
		return true, nil
	}
	f.refreshBundle(ctx)
	f.refreshResources(ctx)
	for {
		var e *authv1.AuditEvent
		if err == nil {
			e, err = stream.Recv()
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if status.Code(err) == codes.PermissionDenied {
			f.denied["audit"] = true
			if !f.send(ctx, AuditDeniedMsg{Err: err}) {
				return true, nil
			}
			return true, f.poll(ctx)
		}
		if err != nil {
			return true, err
		}
		if e.Seq <= *lastSeq {
			continue
		}
		*lastSeq = e.Seq
		if !f.send(ctx, EventMsg{Event: e}) {
			return true, nil
		}
		switch {
		case bundleEvent(e.Type):
			f.refreshBundle(ctx)
		case resourceEvent(e.Type):
			f.refreshResources(ctx)
		}
	}
}

// poll keeps the bundle and resources fresh without the audit stream, and
// returns when the auth service stops answering.
func (f *Feed) poll(ctx context.Context) error {
	t := time.NewTicker(f.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := f.client.Ping(ctx, &authv1.PingRequest{}); err != nil {
			return err
		}
		f.refreshBundle(ctx)
		f.refreshResources(ctx)
	}
}

// Explain is the command that asks the auth service to explain req; the
// answer arrives as an ExplainResultMsg. Only one question is in flight.
func (f *Feed) Explain(req *authv1.ExplainRequest) tea.Cmd {
	return func() tea.Msg {
		select {
		case f.explains <- req:
			return nil
		default:
			return ExplainResultMsg{Request: req, Err: errors.New("the previous question is still being answered")}
		}
	}
}

func (f *Feed) explainLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-f.explains:
			resp, err := f.client.Explain(ctx, req)
			if !f.send(ctx, ExplainResultMsg{Request: req, Response: resp, Err: err}) {
				return
			}
		}
	}
}

func (f *Feed) refreshBundle(ctx context.Context) {
	b, err := f.client.GetBundle(ctx, &authv1.GetBundleRequest{})
	if err != nil {
		return // the stream shows the connection's state
	}
	f.send(ctx, BundleMsg{Bundle: b})
	if f.denied["ca"] {
		return
	}
	cas, err := f.client.ListCAs(ctx, &authv1.ListCAsRequest{})
	if err != nil {
		f.denied["ca"] = status.Code(err) == codes.PermissionDenied
		f.send(ctx, CAsMsg{Err: err})
		return
	}
	f.send(ctx, CAsMsg{CAs: cas.Cas})
}

func (f *Feed) refreshResources(ctx context.Context) {
	for _, kind := range []string{"role", "workload_identity", "lock"} {
		if f.denied[kind] {
			continue
		}
		docs, _, err := authclient.ListAll(ctx, f.client, kind)
		if status.Code(err) == codes.PermissionDenied {
			f.denied[kind] = true
			f.send(ctx, ResourcesMsg{Kind: kind, Err: err})
			continue
		}
		if err != nil {
			continue
		}
		f.send(ctx, ResourcesMsg{Kind: kind, Resources: docs})
	}
}

func (f *Feed) send(ctx context.Context, m tea.Msg) bool {
	select {
	case f.ch <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// maxBatch bounds how many queued messages one Update takes.
const maxBatch = 256

// waitFor is the command that delivers the feed's next message, and with it
// every message already queued behind it (up to maxBatch): bubbletea draws
// after each Update, so a backlog of 500 events, or 500 a second arriving,
// costs a few redraws instead of one each, and a key press waits behind one
// batch at most.
func waitFor(ch <-chan tea.Msg) tea.Cmd {
	if ch == nil {
		return nil
	}
	return func() tea.Msg {
		m, ok := <-ch
		if !ok {
			return nil
		}
		batch := feedMsg{m}
		for len(batch) < maxBatch {
			select {
			case m, ok := <-ch:
				if !ok {
					return batch
				}
				batch = append(batch, m)
				continue
			default:
			}
			break
		}
		return batch
	}
}

// feedMsg is what came from the feed, in order, so that Update knows to
// wait for the next.
type feedMsg []tea.Msg
