package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// obtainIdentity returns the agent's bot identity: minted in-process next to
// the auth service, else the one saved in the data dir, else a new one from
// joining with the token.
func (a *Agent) obtainIdentity(ctx context.Context) (*client.Identity, error) {
	if a.cfg.LocalIdentity != nil {
		id, err := a.cfg.LocalIdentity(ctx)
		if err != nil {
			return nil, fmt.Errorf("getting the local agent's identity: %w", err)
		}
		return id, nil
	}
	dir := a.identityDir()
	id, err := client.LoadIdentity(dir)
	switch {
	case err == nil && time.Now().Before(id.Expires()):
		a.logger.Info("using the saved agent identity", "dir", dir, "expires", id.Expires())
		return id, nil
	case err == nil:
		a.logger.Warn("the saved agent identity has expired; joining again", "dir", dir, "expired", id.Expires())
	case errors.Is(err, fs.ErrNotExist):
	default:
		a.logger.Warn("the saved agent identity is unusable; joining again", "dir", dir, "error", err)
	}
	return a.join(ctx)
}

// join exchanges the join token for a bot identity and saves it.
func (a *Agent) join(ctx context.Context) (*client.Identity, error) {
	dir := a.identityDir()
	if a.cfg.JoinToken == "" {
		return nil, &client.NoJoinTokenError{Dir: dir, Method: a.cfg.JoinMethod}
	}
	if a.cfg.CAPin == "" {
		return nil, errors.New("joining needs the auth service's CA pin: pass --ca-pin sha256:... as printed by widagent start on the auth host")
	}
	c, err := client.Dial(client.Config{Auth: a.cfg.AuthAddr, CAPin: a.cfg.CAPin})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key, err := client.NewKey()
	if err != nil {
		return nil, fmt.Errorf("generating the agent's key: %w", err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return nil, fmt.Errorf("making the agent's CSR: %w", err)
	}
	req := &authv1.JoinRequest{Token: a.cfg.JoinToken, Csr: csr, Host: a.cfg.Host}
	if a.cfg.JoinMethod == JoinMethodKubernetes {
		sa, err := readServiceAccountToken(a.cfg.ServiceAccountTokenFile)
		if err != nil {
			return nil, err
		}
		req.JoinMethod, req.ServiceAccountToken = JoinMethodKubernetes, sa
	}
	if a.cfg.JoinMethod == JoinMethodX509Pop {
		// Read again: the certificate may have been renewed since start.
		cred, err := loadX509PopCredential(a.cfg.X509PopCertFile, a.cfg.X509PopKeyFile)
		if err != nil {
			return nil, err
		}
		if err := signX509PopJoin(ctx, c, cred, req); err != nil {
			return nil, fmt.Errorf("joining the trust domain at %s: %s", a.cfg.AuthAddr, status.Convert(err).Message())
		}
	}
	resp, err := c.Join(ctx, req)
	if err != nil {
		// The status's message alone, and the status kept beside it (not
		// unwrapped, so widagent's exit code stays a failed start's): the
		// command line words the next step it names.
		st := status.Convert(err)
		return nil, &client.RefusedError{Msg: fmt.Sprintf("joining the trust domain at %s: %s", a.cfg.AuthAddr, st.Message()), Status: st}
	}
	id, err := client.NewIdentity(key, resp.CertChain, resp.HostCa)
	if err != nil {
		return nil, fmt.Errorf("joining the trust domain: %w", err)
	}
	if err := id.Save(dir); err != nil {
		return nil, fmt.Errorf("saving the agent's identity: %w", err)
	}
	a.logger.Info("joined the trust domain", "bot", resp.Bot, "trust_domain", resp.TrustDomain, "expires", id.Expires())
	return id, nil
}

// Join methods of Config.JoinMethod.
const (
	JoinMethodToken      = "token"
	JoinMethodKubernetes = "kubernetes"
)

// readServiceAccountToken reads the projected token the kubelet keeps fresh.
func readServiceAccountToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the service-account token: %w: mount a projected service-account token there (see docs/kubernetes.md)", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the service-account token file %s is empty: mount a projected service-account token there (see docs/kubernetes.md)", path)
	}
	return tok, nil
}

// useIdentity dials the auth service with id and makes it current; the
// previous connection is closed once calls on it have had time to finish.
func (a *Agent) useIdentity(id *client.Identity) error {
	c, err := client.Dial(client.Config{Auth: a.cfg.AuthAddr, Identity: id, DialOptions: []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(a.countUnary),
		grpc.WithChainStreamInterceptor(a.countStream),
	}})
	if err != nil {
		return err
	}
	if old := a.conn.Load(); old != nil {
		// Carry on with the replica the agent follows now.
		c.Follow(old.Current())
	}
	a.id.Store(id)
	a.idChanged.notify()
	if old := a.conn.Swap(c); old != nil {
		a.restartWatch()
		time.AfterFunc(30*time.Second, func() { _ = old.Close() })
	}
	return nil
}

func (a *Agent) countUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	a.metrics.authRPCs.WithLabelValues(method).Inc()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (a *Agent) countStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	a.metrics.authRPCs.WithLabelValues(method).Inc()
	return streamer(ctx, desc, cc, method, opts...)
}

// renewIdentityLoop renews the bot certificate at half its life. A bot that
// was revoked rejoins when it has a token; otherwise the agent keeps serving
// what it has until it expires, and says why.
func (a *Agent) renewIdentityLoop(ctx context.Context) error {
	failures := 0
	for {
		id := a.id.Load()
		life := id.Leaf.NotAfter.Sub(id.Leaf.NotBefore)
		at := id.Leaf.NotBefore.Add(life / 2)
		if failures > 0 {
			at = time.Now().Add(backoff(failures))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(at)):
		case <-a.renewNow:
			if st := a.st.Load(); st == nil || st.cas[caHost].GetActiveSignerId() == hex.EncodeToString(a.id.Load().Leaf.AuthorityKeyId) {
				continue // already renewed
			}
			a.logger.Info("renewing the agent's certificate early: the host CA signs with a new key")
		}
		id = a.id.Load()
		next, err := a.renewIdentity(ctx, id)
		if err != nil {
			failures++
			a.logger.Warn("renewing the agent's certificate failed", "error", err, "expires", id.Expires())
			continue
		}
		if err := a.useIdentity(next); err != nil {
			failures++
			a.logger.Warn("using the renewed agent certificate failed", "error", err)
			continue
		}
		failures = 0
		a.logger.Info("renewed the agent's certificate", "expires", next.Expires())
	}
}

func (a *Agent) renewIdentity(ctx context.Context, id *client.Identity) (*client.Identity, error) {
	if a.cfg.LocalIdentity != nil {
		return a.cfg.LocalIdentity(ctx)
	}
	key, err := client.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return nil, err
	}
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := a.client().RenewBotCert(callCtx, &authv1.RenewBotCertRequest{Csr: csr})
	if err != nil {
		if code := status.Code(err); (code == codes.Unauthenticated || code == codes.PermissionDenied) && a.cfg.JoinToken != "" {
			a.logger.Warn("the auth service refused the agent's certificate; joining again", "error", status.Convert(err).Message())
			return a.join(ctx)
		}
		return nil, fmt.Errorf("renewing the agent's certificate: %s", status.Convert(err).Message())
	}
	hostCAs := make([][]byte, len(id.HostCAs))
	for i, c := range id.HostCAs {
		hostCAs[i] = c.Raw
	}
	next, err := client.NewIdentity(key, resp.CertChain, hostCAs)
	if err != nil {
		return nil, err
	}
	if err := next.Save(a.identityDir()); err != nil {
		return nil, fmt.Errorf("saving the renewed identity: %w", err)
	}
	return next, nil
}

// restartWatch ends the current state stream so that it reopens on the
// current connection.
func (a *Agent) restartWatch() {
	a.watchMu.Lock()
	defer a.watchMu.Unlock()
	if a.watchCancel != nil {
		a.watchCancel()
	}
}

// watchLoop keeps one stream open to the auth service and applies every
// state it pushes. When the stream breaks it reconnects with jittered
// backoff; meanwhile the cache serves what is still valid.
func (a *Agent) watchLoop(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		a.watchMu.Lock()
		a.watchCancel = cancel
		a.watchMu.Unlock()
		c := a.client()
		from := c.Current()
		got, err := a.watchOnce(wctx, c, &from)
		// Read before cancel, which would make every stream look restarted
		// on purpose and turn a failing stream into a silent, unpaced loop.
		restarted := wctx.Err() != nil
		cancel()
		a.following.Store(false)
		a.metrics.connected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			failures = 0
		}
		if restarted || errors.Is(err, errResync) {
			continue // restarted on purpose, on a new connection or for a snapshot
		}
		failures++
		// The replica that broke the stream is left for the next one; a
		// dead replica's calls fail over by themselves, but a frozen one
		// is found only by its silent stream.
		c.MoveOn(from)
		wait := backoff(failures)
		if n := len(c.Addrs()); n > 1 && failures <= n {
			// Another replica is likely up: try it at once, not after a
			// backoff meant for an auth service that is down.
			wait = failoverPause
		}
		// Every attempt is logged with its reason, at most one line per 5 s:
		// a line stands for the failures held back since the last one.
		if n, ok := a.retryLog.allow(time.Now()); ok {
			a.logger.Warn("lost the auth service's stream; serving cached SVIDs and retrying", "auth", from, "next", c.Current(),
				"error", status.Convert(err).Message(), "retry_in", wait.Round(time.Millisecond), "failed_attempts", n, "failures_in_a_row", failures)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

// failoverPause is the wait before the agent asks the next replica for
// its stream: short, so that failing over takes well under a second once
// the broken stream is noticed.
const failoverPause = 100 * time.Millisecond

// streamSilence is how long the agent waits on a WatchAgent stream with
// nothing arriving before it takes the stream for dead: a few of the auth
// service's heartbeats.
const streamSilence = 7 * time.Second

// streamQuiet is how long a new stream may wait for its first message
// before the agent logs that it is still waiting.
const streamQuiet = 2 * time.Second

var errSilent = fmt.Errorf("nothing came from the auth service for %s: it is frozen or cut off", streamSilence)

// errResync ends a stream after the agent doubted a delta: it reconnects at
// once and asks for a snapshot.
var errResync = errors.New("the agent asks the auth service for a snapshot")

// watchOnce follows one stream; got says whether any state arrived, and
// *from is set to the replica that the stream came from. A state
// may come in several messages (AgentState.more): they are gathered and the
// state is applied, all at once, when the last arrives. The agent names the
// revision it holds, and gets what changed since (a delta) or a snapshot.
func (a *Agent) watchOnce(ctx context.Context, c *client.Client, from *string) (got bool, err error) {
	// A stream silent for this long is dead (the auth service sends a
	// heartbeat every 2 s): a frozen auth host is found within seconds.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silent := time.AfterFunc(streamSilence, func() { cancel(errSilent) })
	defer silent.Stop()
	// A host that accepts and answers nothing takes streamSilence to give
	// up on: say so early rather than stay silent meanwhile.
	quiet := time.AfterFunc(streamQuiet, func() {
		a.logger.Warn("the auth service has not answered yet; still waiting", "auth", c.Current(),
			"waited", streamQuiet, "gives_up_after", streamSilence)
	})
	defer quiet.Stop()
	defer func() {
		if context.Cause(ctx) == errSilent {
			err = errSilent
		}
	}()
	var pos agentsync.Position
	if st := a.st.Load(); st != nil && !a.resync {
		pos = st.pos
	}
	a.resync = false
	stream, err := c.WatchAgent(ctx, agentsync.Request(a.cfg.Host, pos))
	// The replica the stream was opened on, which a call that failed over
	// meanwhile may have moved away from: that one is left when it breaks.
	*from = c.Current()
	if err != nil {
		return false, err
	}
	var g agentsync.Gatherer
	for {
		msg, err := stream.Recv()
		if err != nil {
			return got, err
		}
		silent.Reset(streamSilence)
		quiet.Stop()
		if msg.GetHeartbeat() {
			continue
		}
		if msg, err = g.Add(msg); err != nil {
			return got, err
		}
		if msg == nil {
			continue
		}
		var (
			st      *state
			skipped []error
		)
		if msg.GetDelta() {
			st, skipped, err = applyDelta(a.st.Load(), msg)
			if err != nil {
				a.logger.Warn("the agent cannot apply a change the auth service sent; it asks for the whole state", "error", err)
				a.resync = true
				return got, errResync
			}
		} else if st, skipped, err = newState(msg, a.st.Load()); err != nil {
			a.logger.Error("the auth service sent a state the agent cannot use", "error", err)
			continue
		}
		a.reportSkipped(msg.GetCorruptWorkloadIdentities(), skipped)
		if !got {
			a.following.Store(true)
			a.metrics.connected.Set(1)
			a.logger.Info("following the auth service", "auth", *from, "trust_domain", st.td.String(), "workload_identities", st.served, "bundle_sequence", st.sequence,
				"snapshot", !msg.GetDelta())
		}
		got = true
		a.setState(st)
	}
}

// reportSkipped says which workload identities the agent cannot serve:
// those stored corrupt, which the auth service names, and those the agent
// could not decode or compile. Each is logged when it first appears (not
// on every push) and counted in wid_agent_workload_identities_skipped.
func (a *Agent) reportSkipped(corrupt []*authv1.CorruptResource, skipped []error) {
	seen := make(map[string]bool, len(corrupt)+len(skipped))
	for _, c := range corrupt {
		key := c.GetKind() + "/" + c.GetName() + ": " + c.GetError()
		seen[key] = true
		if !a.skipped[key] {
			a.logger.Error("a stored workload identity is corrupt; serving the others without it",
				"workload_identity", c.GetName(), "error", c.GetError(),
				"fix", "remove it and create it again, or restore the auth service's data dir from a backup")
		}
	}
	for _, err := range skipped {
		key := err.Error()
		seen[key] = true
		if !a.skipped[key] {
			a.logger.Error("skipping a workload identity the agent cannot use; serving the others", "error", err)
		}
	}
	a.skipped = seen
	a.metrics.skipped.Set(float64(len(seen)))
}

// sendAttestations ships a batch of attestation records.
func (a *Agent) sendAttestations(ctx context.Context, batch []*authv1.Attestation) error {
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := a.client().RecordAttestations(callCtx, &authv1.RecordAttestationsRequest{Host: a.cfg.Host, Attestations: batch})
	return err
}
