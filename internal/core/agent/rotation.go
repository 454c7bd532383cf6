package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"maps"
	"slices"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/status"
)

// CA types as the auth service names them, and the SVID kind each signs.
const (
	caSPIFFE = "spiffe"
	caHost   = "host"
)

var caOfKind = map[string]string{authv1.SVIDTypeX509: caSPIFFE, authv1.SVIDTypeJWT: "jwt", authv1.SVIDTypeWIT: "wit"}

// rotationWarmup: for this long after the agent starts, it reports that
// it cannot yet say which keys signed what its workloads hold. A restarted
// agent's cache is empty, but workloads that followed the previous process
// still serve its SVIDs until they reconnect (go-spiffe retries within
// seconds), and a rotation must not drop their key meanwhile.
const rotationWarmup = 10 * time.Second

// followRotation applies what a pushed state says of the CAs: SVIDs signed
// by a key that no longer signs are renewed at once, a host CA the agent
// does not trust yet is added to what verifies the auth service, and a bot
// certificate from an older host key is renewed.
func (a *Agent) followRotation(st *state) {
	signers := map[string]string{}
	for kind, t := range caOfKind {
		if c := st.cas[t]; c != nil && c.GetActiveSignerId() != "" {
			signers[kind] = c.GetActiveSignerId()
		}
	}
	a.cache.setSigners(signers)

	id := a.id.Load()
	if id == nil {
		return
	}
	if len(st.hostAuthorities) > 0 && !sameCerts(id, st.hostAuthorities) {
		next, err := client.NewIdentity(id.Key, id.Chain, st.hostAuthorities)
		if err != nil {
			a.logger.Error("the auth service sent host CAs the agent cannot use", "error", err)
		} else {
			if a.cfg.LocalIdentity == nil {
				if err := next.Save(a.identityDir()); err != nil {
					a.logger.Warn("saving the agent's identity with the new host CAs", "error", err)
				}
			}
			// A new connection that verifies with the new CAs: the old one
			// would reconnect with the old roots after a blip, and fail
			// once the auth service's certificate comes from the new key.
			if err := a.useIdentity(next); err != nil {
				a.logger.Error("connecting with the new host CAs", "error", err)
			} else {
				a.hostCAsTrusted.Store(st.cas[caHost].GetSequence())
				a.logger.Info("the auth service's host CAs changed", "count", len(st.hostAuthorities))
			}
		}
	} else if c := st.cas[caHost]; c != nil {
		a.hostCAsTrusted.Store(c.GetSequence())
	}
	if c := st.cas[caHost]; c != nil && c.GetActiveSignerId() != "" && hex.EncodeToString(id.Leaf.AuthorityKeyId) != c.GetActiveSignerId() {
		select {
		case a.renewNow <- struct{}{}:
		default:
		}
	}
}

// sameCerts reports whether id trusts exactly the host CAs ders.
func sameCerts(id *client.Identity, ders [][]byte) bool {
	if len(id.HostCAs) != len(ders) {
		return false
	}
	for i, c := range id.HostCAs {
		if !bytes.Equal(c.Raw, ders[i]) {
			return false
		}
	}
	return true
}

// statusReport is what the agent tells the auth service it holds.
func (a *Agent) statusReport(st *state) *authv1.ReportAgentStatusRequest {
	req := &authv1.ReportAgentStatusRequest{Host: a.cfg.Host, Sequences: map[string]int64{}, SignedBy: map[string]string{}, Generations: map[string]int64{}}
	for t, c := range st.cas {
		req.Sequences[t] = c.GetSequence()
		req.Generations[t] = c.GetGeneration()
	}
	// The host CA counts as held once the agent trusts it.
	req.Sequences[caHost] = a.hostCAsTrusted.Load()
	// Which keys signed what the agent holds matters only to a rotation in
	// progress; outside one, leaving it out keeps an idle agent silent
	// while its cache changes.
	rotating := func(t string) bool {
		c := st.cas[t]
		return c != nil && c.GetPhase() != "" && c.GetPhase() != "standby"
	}
	svidsRotating := slices.ContainsFunc(slices.Collect(maps.Values(caOfKind)), rotating)
	switch {
	case !svidsRotating:
		// Nothing to say of SVIDs, and no walk over the cache.
	case time.Since(a.started) < rotationWarmup:
		for _, t := range caOfKind {
			if rotating(t) {
				req.SignedBy[t] = authv1.SignerWarmingUp
			}
		}
	default:
		for kind, signer := range a.cache.signedBy() {
			if t := caOfKind[kind]; rotating(t) {
				req.SignedBy[t] = signer
			}
		}
	}
	if id := a.id.Load(); id != nil && rotating(caHost) {
		req.SignedBy[caHost] = hex.EncodeToString(id.Leaf.AuthorityKeyId)
	}
	return req
}

// reportLoop tells the auth service what the agent holds whenever that
// changes: a rotation moves on only once every live agent has caught up.
// An idle agent sends nothing.
func (a *Agent) reportLoop(ctx context.Context) error {
	var last *authv1.ReportAgentStatusRequest
	failures := 0
	for {
		stateCh := a.stateChanged.wait()
		cacheCh := a.cache.changed.wait()
		idCh := a.idChanged.wait()
		var retry <-chan time.Time
		if wait := rotationWarmup - time.Since(a.started); wait > 0 {
			retry = time.After(wait) // report again when warm
		}
		if st := a.st.Load(); st != nil {
			req := a.statusReport(st)
			if last == nil || !sameReport(last, req) {
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := a.client().ReportAgentStatus(callCtx, req)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					failures++
					a.logger.Warn("telling the auth service what the agent holds failed", "error", status.Convert(err).Message())
					retry = time.After(backoff(failures))
				} else {
					last, failures = req, 0
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stateCh:
		case <-cacheCh:
		case <-idCh:
		case <-retry:
		}
	}
}

func sameReport(a, b *authv1.ReportAgentStatusRequest) bool {
	return a.Host == b.Host && maps.Equal(a.Sequences, b.Sequences) && maps.Equal(a.SignedBy, b.SignedBy) && maps.Equal(a.Generations, b.Generations)
}
