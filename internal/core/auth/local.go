package auth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/identity"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
)

// LocalAgentBot is the bot of the agent that runs in the auth service's
// process (widagent start).
const LocalAgentBot = "local-agent"

// DevIdentity is the workload identity EnsureDevIdentity creates.
const DevIdentity = "dev-uid"

// JoinMethodLocal is the join method of LocalAgentIdentity in audit events.
const JoinMethodLocal = "local"

// adminContext makes the calls below act, and be audited, as the local admin.
func (s *Server) adminContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerKey{}, &caller{Kind: KindAdmin, Name: "admin", RemoteAddr: "local"})
}

// LocalAgentIdentity gives the agent running in this process its bot
// identity without a join token: it makes sure the bot local-agent exists
// (creating it with the built-in role local-agent if it is missing, also
// after an admin removed it; an existing bot is left as the admin made it),
// signs a bot certificate for a fresh key with the host CA exactly as Join
// does, so that RenewBotCert renews it, and audits it as a join with method
// "local" from host. The identity carries the host CAs, so the agent can
// dial the TLS listener with it.
//
// It waits for the audit log, so call it once Run is running.
func (s *Server) LocalAgentIdentity(ctx context.Context, host string) (*identity.Identity, error) {
	if err := s.ensureLocalAgentBot(ctx); err != nil {
		return nil, err
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, fmt.Errorf("generating the local agent's key: %w", err)
	}
	gen, err := s.res.generation(ctx, KindBot, LocalAgentBot)
	if err != nil {
		return nil, fmt.Errorf("reading the local agent's generation: %w", err)
	}
	host = agentHost(host)
	cert, err := s.issuer.SignInternalCert(issuer.InternalParams{CA: ca.TypeHost, PublicKey: key.Public(), TTL: BotCertTTL, Kind: KindBot, Name: LocalAgentBot, Generation: gen, Host: host})
	if err != nil {
		return nil, fmt.Errorf("issuing the local agent's certificate: %w", err)
	}
	if _, err := s.audit.Emit(ctx, audit.Event{
		Type: audit.TypeJoin, Actor: "bot:" + LocalAgentBot, Host: host, RemoteAddr: "local", Outcome: audit.OutcomeSuccess,
		Serial: serialHex(cert.SerialNumber.Bytes()), TTLSeconds: int64(BotCertTTL / time.Second),
		Details: map[string]string{"method": JoinMethodLocal},
	}); err != nil {
		return nil, fmt.Errorf("auditing the local agent's join: %w", err)
	}
	var hostCAs [][]byte
	for _, c := range s.cas.Authorities(ca.TypeHost) {
		hostCAs = append(hostCAs, c.Raw)
	}
	return identity.NewIdentity(key, [][]byte{cert.Raw}, hostCAs)
}

// ensureLocalAgentBot creates the local agent's bot, and its built-in role
// if that is gone too, as the admin.
func (s *Server) ensureLocalAgentBot(ctx context.Context) error {
	ctx = s.adminContext(ctx)
	if _, err := s.res.bot(ctx, LocalAgentBot); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("reading bot %s: %w", LocalAgentBot, err)
	}
	if _, err := s.res.role(ctx, rbac.RoleLocalAgent); errors.Is(err, store.ErrNotFound) {
		for _, r := range rbac.BuiltinRoles() {
			if r.Metadata.Name == rbac.RoleLocalAgent {
				if err := s.createAsAdmin(ctx, r, nil); err != nil {
					return err
				}
			}
		}
	} else if err != nil {
		return fmt.Errorf("reading role %s: %w", rbac.RoleLocalAgent, err)
	}
	bot := &resource.Bot{
		Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{
			Name: LocalAgentBot, Description: "The agent that runs in the auth service's process (widagent start).",
		}},
		Spec: resource.BotSpec{Roles: []string{rbac.RoleLocalAgent}},
	}
	return s.createAsAdmin(ctx, bot, map[string]string{"reason": "local agent"})
}

// createAsAdmin creates v and audits it; one that already exists (made by
// a racing call) is left alone. ctx must carry the admin caller.
func (s *Server) createAsAdmin(ctx context.Context, v resource.Resource, details map[string]string) error {
	if err := v.Validate(); err != nil {
		return err
	}
	o, err := op(store.OpCreate, v)
	if err != nil {
		return err
	}
	if _, err := s.res.apply(ctx, o); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil
		}
		return fmt.Errorf("creating %s: %w", resource.Ref(v), err)
	}
	return s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(v), details)
}

// EnsureDevIdentity creates the workload identity dev-uid, which gives
// processes of uid the SPIFFE ID /uid/<uid> (hint dev-uid), as the admin,
// so that a fresh `widagent start` serves its user an SVID at once. It does
// nothing if dev-uid exists, whatever it holds.
func (s *Server) EnsureDevIdentity(ctx context.Context, uid int) (created bool, err error) {
	if uid < 0 {
		return false, fmt.Errorf("uid %d is negative", uid)
	}
	ctx = s.adminContext(ctx)
	if _, err := s.res.get(ctx, resource.KindWorkloadIdentity, DevIdentity); err == nil {
		return false, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("reading workload identity %s: %w", DevIdentity, err)
	}
	value := strconv.Itoa(uid)
	wi := &resource.WorkloadIdentity{
		Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1, Metadata: resource.Metadata{
			Name: DevIdentity, Description: "Processes of uid " + value + ", the user who first ran widagent start.",
		}},
		Spec: resource.WorkloadIdentitySpec{
			SPIFFE: resource.WorkloadSPIFFE{ID: "/uid/{{ workload.unix.uid }}", Hint: DevIdentity},
			Rules: resource.WorkloadRules{Allow: []resource.WorkloadRule{{
				Conditions: []resource.Condition{{Attribute: "workload.unix.uid", Eq: &value}},
			}}},
		},
	}
	if err := wi.Validate(); err != nil {
		return false, err
	}
	o, err := op(store.OpCreate, wi)
	if err != nil {
		return false, err
	}
	if _, err := s.res.apply(ctx, o); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return false, nil
		}
		return false, fmt.Errorf("creating %s: %w", resource.Ref(wi), err)
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceCreated, resource.Ref(wi), nil); err != nil {
		return true, err
	}
	return true, nil
}
