package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// checkGrantable refuses, and audits, a caller that would hand out more
// than its own roles grant: roles given to a user or bot, a join token
// (which makes SVIDs of its bot's roles), a user reset (which takes over
// the user), a role written, or a workload identity (which an agent with
// every workload identity, such as local-agent, then issues). what names
// the act for the message, ref the resource for the audit event. The
// local admin may do anything.
func (s *Server) checkGrantable(ctx context.Context, what, ref string, target []*resource.Role) error {
	c := callerFrom(ctx)
	if c.Kind == KindAdmin {
		return nil
	}
	d := rbac.CheckGrantable(c.Roles, target)
	if d.Allowed {
		return nil
	}
	msg := "you may not " + what + ": " + d.Reason
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeAccessDenied, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr,
		Reason: msg, Resource: ref, Details: map[string]string{"check": d.Check},
	})
	return status.Error(codes.PermissionDenied, msg)
}

// rolesNamed loads roles by name, those in pending (written in the same
// request) winning over stored ones; missing roles
// are skipped (checkRolesExist refuses them with its own sentence).
func (s *Server) rolesNamed(ctx context.Context, names []string, pending map[string]*resource.Role) ([]*resource.Role, error) {
	var out []*resource.Role
	for _, n := range names {
		if r := pending[n]; r != nil {
			out = append(out, r)
			continue
		}
		r, err := s.res.role(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, storeError("role/"+n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// botRoles are the roles of bot name, from pendingBots when written in the
// same request.
func (s *Server) botRoles(ctx context.Context, name string, pendingBots map[string]*resource.Bot, pending map[string]*resource.Role) ([]*resource.Role, error) {
	var names []string
	if b := pendingBots[name]; b != nil {
		names = b.Spec.Roles
	} else {
		b, err := s.res.bot(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil // checkRolesExist says so
		}
		if err != nil {
			return nil, storeError("bot/"+name, err)
		}
		names = b.Spec.Roles
	}
	return s.rolesNamed(ctx, names, pending)
}

// checkResourceGrantable applies checkGrantable to a resource being
// created or replaced.
func (s *Server) checkResourceGrantable(ctx context.Context, v resource.Resource, pending map[string]*resource.Role, pendingBots map[string]*resource.Bot) error {
	ref := resource.Ref(v)
	var (
		target []*resource.Role
		what   string
		err    error
	)
	switch t := v.(type) {
	case *resource.Role:
		target, what = []*resource.Role{t}, "write "+ref
	case *resource.User:
		what = "give user " + t.Metadata.Name + " roles " + fmt.Sprint(t.Spec.Roles)
		target, err = s.rolesNamed(ctx, t.Spec.Roles, pending)
	case *resource.Bot:
		what = "give bot " + t.Metadata.Name + " roles " + fmt.Sprint(t.Spec.Roles)
		target, err = s.rolesNamed(ctx, t.Spec.Roles, pending)
	case *resource.JoinToken:
		what = "make a join token for bot " + t.Spec.Bot
		target, err = s.botRoles(ctx, t.Spec.Bot, pendingBots, pending)
	case *resource.WorkloadIdentity:
		what = "write " + ref
		target = []*resource.Role{workloadIssuanceRole(t)}
	case *resource.Lock:
		// A SPIFFE ID lock takes SVIDs away from their workloads: only
		// who may issue them may.
		if t.Spec.Target.SPIFFEID == "" {
			return nil
		}
		what = "lock " + t.Spec.Target.SPIFFEID
		target = []*resource.Role{spiffeReachRole(ref, lockPath(t.Spec.Target.SPIFFEID))}
	default:
		return nil
	}
	if err != nil {
		return err
	}
	return s.checkGrantable(ctx, what, ref, target)
}

// spiffeReachRole is what acting on the SVIDs of every ID in paths takes
// (revoking them, locking them), as a role: their paths and those under
// them.
func spiffeReachRole(name string, paths ...string) *resource.Role {
	var grants []resource.SPIFFEGrant
	for _, p := range paths {
		grants = append(grants, resource.SPIFFEGrant{Path: p}, resource.SPIFFEGrant{Path: strings.TrimSuffix(p, "/") + "/**"})
	}
	return &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec:   resource.RoleSpec{Allow: resource.RoleConditions{SPIFFE: grants}},
	}
}

// lockPath is the SPIFFE path a lock target (an ID or its path) names.
func lockPath(target string) string {
	if strings.HasPrefix(target, "/") {
		return target
	}
	if id, err := spiffeid.FromString(target); err == nil {
		return id.Path()
	}
	return target
}

// checkSPIFFEReach refuses, and audits naming the grant it lacks, a caller
// whose SPIFFE grants do not cover every ID of ids: what names the act.
func (s *Server) checkSPIFFEReach(ctx context.Context, what, ref string, ids ...string) error {
	paths := make([]string, 0, len(ids))
	for _, id := range ids {
		paths = append(paths, lockPath(id))
	}
	return s.checkGrantable(ctx, what, ref, []*resource.Role{spiffeReachRole(ref, paths...)})
}

// workloadIssuanceRole is what issuing a workload identity takes, as a role: its
// SPIFFE ID path (from its first placeholder on, any path: an attribute
// can be anything), its DNS SANs and its TTLs.
func workloadIssuanceRole(wi *resource.WorkloadIdentity) *resource.Role {
	path := wi.Spec.SPIFFE.ID
	if i := strings.Index(path, "{{"); i >= 0 {
		path = path[:strings.LastIndex(path[:i], "/")] + "/**"
	}
	ttl := max(wi.Spec.X509.TTL, wi.Spec.JWT.TTL)
	return &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: resource.Ref(wi)}},
		Spec: resource.RoleSpec{
			Allow:   resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: path, DNSSANs: wi.Spec.X509.DNSSANs}}},
			Options: resource.RoleOptions{MaxSVIDTTL: ttl},
		},
	}
}
