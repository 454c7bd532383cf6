// Package sim simulates wid agents for the fleet benchmark and the fleet
// end-to-end test: each simulated agent has its own gRPC connection and bot
// certificate, and follows WatchAgent as the agent does (agentsync: snapshot,
// then deltas, a snapshot again on any doubt), but keeps only a hash of each
// workload identity and when it arrived, so that a thousand of them fit in
// one process.
package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/protobuf/proto"
)

// Held is one workload identity an agent holds.
type Held struct {
	Hash uint64
	At   time.Time
}

// Agent is one simulated agent.
type Agent struct {
	Host string
	c    *client.Client

	mu        sync.Mutex
	pos       agentsync.Position
	held      map[string]Held
	bundleSeq int64
	bundleAt  time.Time
	firstAt   time.Time
	snapshots int
	resyncs   int

	// bytes counts what the auth service sent, heartbeats aside.
	bytes    atomic.Int64
	followed chan struct{}
	once     sync.Once
}

// NewAgent is an agent on host that talks to the auth service through c.
func NewAgent(c *client.Client, host string) *Agent {
	return &Agent{Host: host, c: c, held: map[string]Held{}, followed: make(chan struct{})}
}

var errResync = errors.New("resync")

// Run follows the auth service until ctx ends, reconnecting after a broken
// stream with a short jittered backoff, and at once after a doubted delta.
func (a *Agent) Run(ctx context.Context) {
	for ctx.Err() == nil {
		err := a.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errResync) {
			continue
		}
		t := time.NewTimer(100*time.Millisecond + rand.N(400*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) watchOnce(ctx context.Context) error {
	a.mu.Lock()
	pos := a.pos
	a.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.c.WatchAgent(ctx, agentsync.Request(a.Host, pos))
	if err != nil {
		return err
	}
	var g agentsync.Gatherer
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if msg.GetHeartbeat() {
			continue
		}
		a.bytes.Add(int64(proto.Size(msg)))
		st, err := g.Add(msg)
		if err != nil {
			return err
		}
		if st == nil {
			continue
		}
		if err := a.apply(st, time.Now()); err != nil {
			a.mu.Lock()
			a.pos, a.resyncs = agentsync.Position{}, a.resyncs+1
			a.mu.Unlock()
			return errResync
		}
	}
}

func (a *Agent) apply(st *authv1.AgentState, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st.GetDelta() {
		if err := agentsync.CheckDelta(a.pos, st); err != nil {
			return err
		}
	} else {
		a.held = make(map[string]Held, len(st.GetWorkloadIdentities()))
		a.snapshots++
	}
	for _, n := range st.GetRemovedWorkloadIdentities() {
		delete(a.held, n)
	}
	for _, doc := range st.GetWorkloadIdentities() {
		name, err := DocName(doc)
		if err != nil {
			return err
		}
		h := Hash(doc)
		if old, ok := a.held[name]; !ok || old.Hash != h {
			a.held[name] = Held{Hash: h, At: now}
		}
	}
	if b := st.GetBundle(); b != nil && b.GetSequence() != a.bundleSeq {
		a.bundleSeq, a.bundleAt = b.GetSequence(), now
	}
	a.pos = agentsync.Of(st)
	a.once.Do(func() {
		a.firstAt = now
		close(a.followed)
	})
	return nil
}

// Followed is closed once the agent applied its first state.
func (a *Agent) Followed() <-chan struct{} { return a.followed }

// FirstAt is when the agent applied its first state.
func (a *Agent) FirstAt() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.firstAt
}

// Get says whether the agent holds name, and which version since when.
func (a *Agent) Get(name string) (Held, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h, ok := a.held[name]
	return h, ok
}

// Holds is every identity the agent holds, by name, as hashes.
func (a *Agent) Holds() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]uint64, len(a.held))
	for n, h := range a.held {
		out[n] = h.Hash
	}
	return out
}

// Bundle is the bundle sequence the agent holds and since when.
func (a *Agent) Bundle() (int64, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bundleSeq, a.bundleAt
}

// Bytes is what the auth service sent the agent so far.
func (a *Agent) Bytes() int64 { return a.bytes.Load() }

// Counts are the snapshots the agent got and the deltas it doubted.
func (a *Agent) Counts() (snapshots, resyncs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snapshots, a.resyncs
}

// Snapshot is the whole state a fresh agent of c's bot would get now:
// identity hashes by name and the bundle sequence.
func Snapshot(ctx context.Context, c *client.Client, host string) (map[string]uint64, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.WatchAgent(ctx, agentsync.Request(host, agentsync.Position{}))
	if err != nil {
		return nil, 0, err
	}
	var g agentsync.Gatherer
	for {
		msg, err := stream.Recv()
		if err != nil {
			return nil, 0, err
		}
		if msg.GetHeartbeat() {
			continue
		}
		st, err := g.Add(msg)
		if err != nil {
			return nil, 0, err
		}
		if st == nil {
			continue
		}
		if st.GetDelta() {
			return nil, 0, fmt.Errorf("the auth service sent a delta to an agent that holds nothing")
		}
		out := make(map[string]uint64, len(st.GetWorkloadIdentities()))
		for _, doc := range st.GetWorkloadIdentities() {
			name, err := DocName(doc)
			if err != nil {
				return nil, 0, err
			}
			out[name] = Hash(doc)
		}
		return out, st.GetBundle().GetSequence(), nil
	}
}

// Hash is a document's hash.
func Hash(doc []byte) uint64 {
	h := fnv.New64a()
	h.Write(doc)
	return h.Sum64()
}

var namePrefix = []byte(`"metadata":{"name":"`)

// DocName is a workload identity document's name. The auth service encodes
// metadata.name first, so it is found without decoding the whole document;
// anything else is decoded.
func DocName(doc []byte) (string, error) {
	if i := bytes.Index(doc, namePrefix); i >= 0 {
		rest := doc[i+len(namePrefix):]
		if j := bytes.IndexAny(rest, `"\`); j >= 0 && rest[j] == '"' {
			return string(rest[:j]), nil
		}
	}
	var v struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(doc, &v); err != nil || v.Metadata.Name == "" {
		return "", fmt.Errorf("a workload identity document without a name: %v", err)
	}
	return v.Metadata.Name, nil
}

// Join joins the trust domain at addr with token as host, with a key of
// its own.
func Join(ctx context.Context, addr, pin, token, host string) (*client.Identity, error) {
	c, err := client.Dial(client.Config{Auth: addr, CAPin: pin})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key, err := client.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return nil, err
	}
	resp, err := c.Join(ctx, &authv1.JoinRequest{Token: token, Csr: csr, Host: host})
	if err != nil {
		return nil, fmt.Errorf("joining as %s: %w", host, err)
	}
	return client.NewIdentity(key, resp.CertChain, resp.HostCa)
}
