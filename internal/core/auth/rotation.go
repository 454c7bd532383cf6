package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/rotation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	// DefaultAgentWindow: agents seen within it hold rotations back.
	DefaultAgentWindow = rotation.DefaultAgentWindow
	// rotationTick is how often automatic rotations and rollbacks are
	// looked at, besides every agent report.
	rotationTick = 250 * time.Millisecond
)

// ReportAgentStatus records what an agent holds.
func (s *Server) ReportAgentStatus(ctx context.Context, req *authv1.ReportAgentStatusRequest) (*authv1.ReportAgentStatusResponse, error) {
	c := callerFrom(ctx)
	if err := s.requireAgent(ctx, c, "report agent status"); err != nil {
		return nil, err
	}
	host := agentHost(req.Host)
	seqs, signed, gens := byCAType(req.Sequences), byCAType(req.SignedBy), byCAType(req.Generations)
	ok, err := s.agents.Report(ctx, c.Name, host, seqs, signed, gens)
	if err != nil {
		return nil, storeError("agent status", err)
	}
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "bot %q has no state stream open from host %q: an agent reports what it holds only while it follows the auth service (WatchAgent)", c.Name, host)
	}
	return &authv1.ReportAgentStatusResponse{}, nil
}

// byCAType keeps the entries of m keyed by a CA type, dropping the others.
func byCAType[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		if _, err := ca.ParseType(k); err == nil {
			out[k] = v
		}
	}
	return out
}

// maxIssuedTTL is the longest life of anything CA t signs: a rotation's
// grace period must cover it, so that what an old key signed just before
// the switch expires before the old key leaves the bundle. By is what sets it.
func (s *Server) maxIssuedTTL(ctx context.Context, t ca.Type) (max time.Duration, by string, err error) {
	switch t {
	case ca.TypeHost:
		return serverCertTTL, "the auth service's certificate", nil
	case ca.TypeUser:
		max, by = login.DefaultSessionTTL, "the default login"
	}
	list, err := s.res.list(ctx, resource.KindRole)
	if err != nil {
		return 0, "", err
	}
	for _, v := range list {
		r, ok := v.(*resource.Role)
		if !ok {
			continue
		}
		var d time.Duration
		switch t {
		case ca.TypeUser:
			d = r.Spec.Options.MaxSessionTTL.D()
			if d == 0 {
				continue
			}
			d = min(d, login.MaxSessionTTL)
		default:
			if len(r.Spec.Allow.SPIFFE) == 0 {
				continue
			}
			d = r.Spec.Options.MaxSVIDTTL.D()
			if d == 0 {
				d = resource.MaxSVIDTTL
			}
		}
		if d > max {
			max, by = d, fmt.Sprintf("role %q", r.Metadata.Name)
		}
	}
	return max, by, nil
}

func (s *Server) RotateCA(ctx context.Context, req *authv1.RotateCARequest) (*authv1.RotateCAResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbUpdate); err != nil {
		return nil, err
	}
	// Checked against the CAs as stored: another replica may have moved them.
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	c := callerFrom(ctx)
	types, err := parseCATypes(req.Type)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	grace := time.Duration(req.GracePeriodSeconds) * time.Second
	if req.GracePeriodSeconds < 0 {
		return nil, status.Error(codes.InvalidArgument, "the grace period must be positive")
	}
	mode := ca.Mode(strings.ToLower(req.Mode))
	switch {
	case mode == "" && grace > 0:
		mode = ca.ModeAuto
	case mode == ca.ModeManual && grace > 0:
		return nil, status.Error(codes.InvalidArgument, "a grace period starts an automatic rotation: drop --manual, or drop --grace-period and move the phases yourself")
	case mode == ca.ModeAuto && grace == 0:
		return nil, status.Error(codes.InvalidArgument, "an automatic rotation needs --grace-period, such as --grace-period 30h")
	case mode != "" && mode != ca.ModeAuto && mode != ca.ModeManual:
		return nil, status.Errorf(codes.InvalidArgument, "unknown rotation mode %q: use manual or auto", req.Mode)
	}
	phaseName := req.Phase
	if phaseName == "" {
		if mode != ca.ModeAuto {
			return nil, status.Error(codes.InvalidArgument, "say which phase to move to with --phase (init, update_clients, update_servers, standby or rollback), or start an automatic rotation with --grace-period")
		}
		phaseName = string(ca.PhaseInit)
	}
	to, err := ca.ParsePhase(phaseName)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if grace > 0 && to != ca.PhaseInit {
		return nil, status.Errorf(codes.InvalidArgument, "a grace period starts a rotation, so it goes with --phase init, not %s", to)
	}
	window := agentWindow(req.AgentWindowSeconds)

	// Check every CA before moving any, so that --type all moves all or none.
	type plan struct {
		t      ca.Type
		doc    ca.Document
		lags   []rotation.Laggard
		maxTTL time.Duration
		// csr: the CA's init waits for the upstream's signature.
		csr bool
	}
	plans := make([]plan, 0, len(types))
	for _, t := range types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		sreq := ca.StepRequest{Type: t, From: doc.Phase, To: to, Mode: mode, GracePeriod: grace}
		err = ca.CheckStep(doc, sreq)
		if err == nil && to == ca.PhaseInit && doc.UpstreamMode() == ca.UpstreamCSR {
			// Checked like any step, then left waiting: the new
			// intermediate needs the offline upstream's signature.
			p := plan{t: t, doc: doc, csr: true}
			if grace > 0 {
				if p.maxTTL, _, err = s.maxIssuedTTL(ctx, t); err != nil {
					return nil, storeError("roles", err)
				}
				if grace < p.maxTTL {
					err = fmt.Errorf("the grace period %s is shorter than the %s a %s SVID may live: give at least --grace-period %s",
						resource.FormatDuration(grace), resource.FormatDuration(p.maxTTL), t, resource.FormatDuration(p.maxTTL))
				}
			}
			if err == nil {
				plans = append(plans, p)
				continue
			}
		}
		if err != nil {
			s.recordRotationRefusal(ctx, c, t, doc.Phase, to, err.Error())
			return nil, transitionStatus(codes.FailedPrecondition, err.Error(), err)
		}
		var maxTTL time.Duration
		if grace > 0 {
			max, by, err := s.maxIssuedTTL(ctx, t)
			maxTTL = max
			if err != nil {
				return nil, storeError("roles", err)
			}
			// The old key must stay trusted for that long after it stops
			// signing (see ca.Rotation.Tail).
			if grace < max {
				msg := fmt.Sprintf("the grace period %s is shorter than the %s that %s lets a %s CA certificate or SVID live: give at least --grace-period %s, or lower that limit first",
					resource.FormatDuration(grace), resource.FormatDuration(max), by, t, resource.FormatDuration(max))
				s.recordRotationRefusal(ctx, c, t, doc.Phase, to, msg)
				return nil, status.Error(codes.InvalidArgument, msg)
			}
		}
		p := plan{t: t, doc: doc, maxTTL: maxTTL}
		if g, ok := rotation.GateFor(doc, to, s.cas.ActiveSignerID(doc.Type)); ok {
			if p.lags, err = s.agents.Laggards(ctx, t, g, window); err != nil {
				return nil, storeError("agent status", err)
			}
		}
		if len(p.lags) > 0 && !req.Force {
			msg := fmt.Sprintf("the %s CA cannot move from %s to %s yet: %d agent(s) lag: %s",
				t, doc.Phase, to, len(p.lags), rotation.DescribeLaggards(p.lags))
			s.recordRotationRefusal(ctx, c, t, doc.Phase, to, msg)
			return nil, refusal(codes.FailedPrecondition, msg, authv1.NextCAWait)
		}
		plans = append(plans, p)
	}

	resp := &authv1.RotateCAResponse{}
	for _, p := range plans {
		if p.csr {
			rmode := mode
			if rmode == "" {
				rmode = ca.ModeManual
			}
			res, err := s.requestCSR(ctx, c, &ca.PendingRotation{Mode: rmode, GracePeriod: grace, MaxTTL: p.maxTTL})
			if err != nil {
				return resp, err
			}
			resp.Waiting = append(resp.Waiting, &authv1.CAWaiting{Type: string(p.t), CsrPem: csrPEM(res.CSR), Fingerprint: res.Fingerprint})
			continue
		}
		step, err := s.cas.Step(ctx, ca.StepRequest{Type: p.t, From: p.doc.Phase, Generation: p.doc.Generation, To: to, Mode: mode, GracePeriod: grace, MaxTTL: p.maxTTL})
		if err != nil {
			code := codes.Internal
			if errors.Is(err, ca.ErrTransition) {
				code = codes.FailedPrecondition
			}
			return resp, transitionStatus(code, fmt.Sprintf("moving the %s CA to %s: %v", p.t, to, err), err)
		}
		if err := s.recordRotationStep(ctx, c.Actor(s), c.RemoteAddr, step, p.lags); err != nil {
			return resp, err
		}
		resp.Steps = append(resp.Steps, stepProto(step, p.lags))
		resp.Cas = append(resp.Cas, s.caInfo(step.Doc))
	}
	return resp, nil
}

func parseCATypes(s string) ([]ca.Type, error) {
	if strings.EqualFold(strings.TrimSpace(s), "all") {
		return slices.Clone(ca.Types), nil
	}
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("say which CA with --type: spiffe, jwt, wit, user, host or all")
	}
	t, err := ca.ParseType(s)
	if err != nil {
		return nil, fmt.Errorf("%w, or all", err)
	}
	return []ca.Type{t}, nil
}

func agentWindow(seconds int64) time.Duration {
	if seconds <= 0 {
		return rotation.DefaultAgentWindow
	}
	return time.Duration(seconds) * time.Second
}

func stepProto(st ca.Step, lags []rotation.Laggard) *authv1.RotationStep {
	return &authv1.RotationStep{
		Type: string(st.Type), From: string(st.From), To: string(st.To), Forced: len(lags) > 0,
		Laggards: rotation.LaggardNames(lags), OldFingerprint: st.Old, NewFingerprint: st.New, Sequence: st.Sequence,
	}
}

func (s *Server) recordRotationStep(ctx context.Context, actor, remote string, st ca.Step, lags []rotation.Laggard) error {
	details := map[string]string{
		"ca_type": string(st.Type), "from": string(st.From), "to": string(st.To), "mode": string(st.Mode),
		"old_fingerprint": st.Old, "new_fingerprint": st.New, "sequence": strconv.FormatInt(st.Sequence, 10),
	}
	reason := ""
	if len(lags) > 0 {
		details["forced"] = "true"
		details["laggards"] = strings.Join(rotation.LaggardNames(lags), ",")
		reason = "forced past lagging agents: " + rotation.DescribeLaggards(lags)
	}
	if _, err := s.audit.Emit(context.WithoutCancel(ctx), audit.Event{
		Type: audit.TypeCARotation, Actor: actor, Host: s.host, RemoteAddr: remote, Outcome: audit.OutcomeSuccess,
		Resource: resource.ResourceCertAuthority + "/" + string(st.Type), Reason: reason, Details: details,
	}); err != nil {
		// The step is stored; say so rather than pretend it failed.
		return status.Errorf(codes.Unavailable, "the %s CA moved to %s but the audit log could not record it: %v", st.Type, st.To, err)
	}
	return nil
}

func (s *Server) recordRotationRefusal(ctx context.Context, c *caller, t ca.Type, from, to ca.Phase, reason string) {
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeCARotation, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Reason: reason,
		Resource: resource.ResourceCertAuthority + "/" + string(t),
		Details:  map[string]string{"ca_type": string(t), "from": string(from), "to": string(to)},
	})
}

func (s *Server) ListCAs(ctx context.Context, _ *authv1.ListCAsRequest) (*authv1.ListCAsResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbList); err != nil {
		return nil, err
	}
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	resp := &authv1.ListCAsResponse{}
	for _, t := range ca.Types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Cas = append(resp.Cas, s.caInfo(doc))
	}
	return resp, nil
}

func (s *Server) GetCAStatus(ctx context.Context, req *authv1.GetCAStatusRequest) (*authv1.GetCAStatusResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbRead); err != nil {
		return nil, err
	}
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	types := ca.Types
	if req.Type != "" {
		var err error
		if types, err = parseCATypes(req.Type); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	window := agentWindow(req.AgentWindowSeconds)
	agents, err := s.agents.Live(ctx, window)
	if err != nil {
		return nil, storeError("agent status", err)
	}
	resp := &authv1.GetCAStatusResponse{}
	for _, t := range types {
		doc, err := s.cas.Document(t)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		st := &authv1.CAStatus{Ca: s.caInfo(doc)}
		next := ca.NextPhase(doc.Phase)
		g, gated := rotation.GateFor(doc, next, s.cas.ActiveSignerID(doc.Type))
		if !gated {
			// Outside a rotation, report against the CA as it stands.
			g = rotation.Gate{Generation: doc.Generation, Sequence: doc.Sequence}
		}
		var lags []rotation.Laggard
		for _, r := range agents {
			a := &authv1.AgentCAState{
				Bot: r.Bot, Host: r.Host, LastSeen: timestamppb.New(r.LastSeen), Connected: r.Connected,
				Sequence: r.Sequences[string(t)], SignedBy: r.SignedBy[string(t)],
			}
			if reason := rotation.LagReason(t, g, r); reason != "" {
				a.Lagging, a.Reason = true, reason
				lags = append(lags, rotation.Laggard{Agent: r, Reason: reason})
			} else if reason := s.agents.SettleReason(t, g, r); gated && reason != "" {
				lags = append(lags, rotation.Laggard{Agent: r, Reason: reason})
			}
			st.Agents = append(st.Agents, a)
		}
		if gated && len(lags) > 0 {
			st.Blocked = fmt.Sprintf("moving to %s waits for %d agent(s): %s", next, len(lags), rotation.DescribeLaggards(lags))
		}
		resp.Cas = append(resp.Cas, st)
	}
	return resp, nil
}

func (s *Server) caInfo(doc ca.Document) *authv1.CAInfo {
	info := &authv1.CAInfo{Type: string(doc.Type), Phase: string(doc.Phase), Mode: string(doc.Mode), Sequence: doc.Sequence}
	for _, k := range doc.KeySets {
		signer, _ := k.SignerID()
		info.Keys = append(info.Keys, &authv1.CAKey{
			Id: k.ID, State: string(k.State), Algorithm: string(k.Algorithm), Kid: k.KID,
			Fingerprint: ca.Fingerprint(k.PublicKey), NotBefore: timestamppb.New(k.NotBefore), NotAfter: timestamppb.New(k.NotAfter),
			SignerId: signer,
		})
	}
	if r := doc.Rotation; r != nil {
		info.RotationStarted = timestamppb.New(r.Started)
		info.PhaseStarted = timestamppb.New(r.PhaseStarted)
		info.GracePeriodSeconds = int64(r.GracePeriod / time.Second)
		info.RolledBackFrom = string(r.RolledBackFrom)
	}
	if doc.Phase != ca.PhaseStandby {
		info.NextPhase = string(ca.NextPhase(doc.Phase))
	}
	if at := doc.NextStepAt(); !at.IsZero() {
		info.NextStepAt = timestamppb.New(at)
	}
	info.Upstream = string(doc.UpstreamMode())
	info.Waiting = waitingFor(doc)
	info.UpstreamRoots = upstreamRoots(doc)
	return info
}

// runRotations moves automatic rotations on when their time comes and
// finishes rollbacks, each once no live agent lags. It runs on the one
// replica that holds the periodic-work lease, until ctx ends (the lease
// is lost), and reads the CAs from the store at every look, since another
// replica may have stepped them.
func (s *Server) runRotations(ctx context.Context) {
	tick := time.NewTicker(rotationTick)
	defer tick.Stop()
	blocked := map[ca.Type]string{}
	sched := rotation.NewStepSchedule(s.clock, s.agents.Mono)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.agents.Reported():
		}
		if err := s.refreshCAs(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("reading the CAs to move rotations on", "error", err)
			}
			continue
		}
		for _, t := range ca.Types {
			doc, err := s.cas.Document(t)
			if err != nil {
				continue
			}
			to := ca.Phase("")
			switch {
			case doc.Phase == ca.PhaseRollback:
				to = ca.PhaseStandby
			case sched.Due(doc):
				to = ca.NextPhase(doc.Phase)
			}
			if to == "" {
				delete(blocked, t)
				continue
			}
			if g, ok := rotation.GateFor(doc, to, s.cas.ActiveSignerID(doc.Type)); ok {
				lags, err := s.agents.Laggards(ctx, t, g, rotation.DefaultAgentWindow)
				if err != nil {
					s.log.Warn("a CA rotation waits: reading agent states failed", "ca", t, "error", err)
					continue
				}
				if len(lags) > 0 {
					if msg := rotation.DescribeLaggards(lags); blocked[t] != msg {
						blocked[t] = msg
						s.log.Warn("a CA rotation waits for agents", "ca", t, "from", doc.Phase, "to", to, "laggards", msg)
					}
					continue
				}
			}
			delete(blocked, t)
			step, err := s.cas.Step(ctx, ca.StepRequest{Type: t, From: doc.Phase, Generation: doc.Generation, To: to})
			if err != nil {
				if !errors.Is(err, ca.ErrTransition) {
					s.log.Warn("moving a CA rotation on", "ca", t, "to", to, "error", err)
				}
				continue
			}
			if err := s.recordRotationStep(ctx, "auth@"+s.host, "", step, nil); err != nil {
				s.log.Error("recording a rotation step", "ca", t, "error", err)
			}
			s.log.Info("CA rotation moved on", "ca", t, "from", step.From, "to", step.To, "sequence", step.Sequence)
		}
	}
}

// transitionStatus is the status of a refused or failed CA step: one
// refused because the CA moved meanwhile names looking at it again as the
// next step.
func transitionStatus(code codes.Code, msg string, err error) error {
	if errors.Is(err, ca.ErrMoved) {
		return refusal(code, msg, authv1.NextCAStatus)
	}
	return status.Error(code, msg)
}
