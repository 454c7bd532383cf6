package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// KubernetesAudience is the audience that projected service-account tokens
// must carry to join this trust domain: wid:<trust domain>.
func (s *Server) KubernetesAudience() string { return kubejoin.Audience(s.td.Name()) }

// joinKubernetes admits an agent that presents a projected service-account
// token allowed by a kubernetes join token. The join token is named, not
// secret, so the refusals may say which check failed; they never repeat
// the service-account token.
func (s *Server) joinKubernetes(ctx context.Context, req *authv1.JoinRequest) (*authv1.JoinResponse, error) {
	name := req.Token
	if name == "" {
		return nil, s.joinDenied(ctx, req, "", "", "no join token name given",
			"the kubernetes join needs the name of a kubernetes join token: pass --join-token NAME (see widctl token ls)")
	}
	if err := resource.ValidateName(name); err != nil {
		return nil, s.joinDenied(ctx, req, "", "", "join token name is invalid",
			"the kubernetes join needs the name of a kubernetes join token, not a secret: pass --join-token NAME (see widctl token ls)")
	}
	v, err := s.res.get(ctx, resource.KindJoinToken, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.joinDenied(ctx, req, "", name, "unknown join token",
				fmt.Sprintf("there is no join token %q: ask an admin to create it (widctl token add --method kubernetes --name %s ...)", name, name))
		}
		return nil, storeError("token", err)
	}
	tok := v.(*resource.JoinToken)
	k := tok.Spec.Kubernetes
	if tok.Spec.Method != resource.JoinMethodKubernetes || k == nil {
		return nil, s.joinDenied(ctx, req, "", name, "join token is for method "+tok.Spec.Method,
			fmt.Sprintf("join token %s is not a kubernetes join token: use one made with widctl token add --method kubernetes", name))
	}
	bot := tok.Spec.Bot
	if !tok.Spec.Expires.IsZero() && !s.clock().Before(tok.Spec.Expires) {
		exp := tok.Spec.Expires.Format(time.RFC3339)
		return nil, s.joinDenied(ctx, req, bot, name, "join token expired at "+exp,
			fmt.Sprintf("join token %s expired at %s: ask an admin to extend it", name, exp))
	}
	if _, err := s.res.bot(ctx, bot); err != nil {
		return nil, s.joinDenied(ctx, req, bot, name, "bot "+bot+" does not exist", "the join token's bot no longer exists: ask an admin")
	}
	pub, err := issuer.ParseCSR(req.Csr)
	if err != nil {
		return nil, s.joinDenied(ctx, req, bot, name, "bad CSR: "+err.Error(), err.Error())
	}
	sa, err := s.kube.Verify(ctx, k, s.KubernetesAudience(), req.ServiceAccountToken)
	if err != nil {
		var r *kubejoin.Refusal
		if errors.As(err, &r) {
			return nil, s.joinDeniedWith(ctx, req, bot, name, "service-account token refused ("+r.Check+"): "+r.Reason,
				"the service-account token was refused: "+r.Reason, map[string]string{"check": r.Check})
		}
		// The auth service could not check the token: its configuration or
		// the cluster is at fault, not the agent, which may retry.
		s.log.Warn("checking a service-account token failed", "token", name, "error", err)
		s.recordJoinError(ctx, req, bot, name, err)
		return nil, status.Error(codes.Unavailable, "the auth service could not check the service-account token with the cluster: try again; if it persists, an admin finds the cause in the auth service's log and audit log")
	}
	details := map[string]string{
		"token": name, "method": resource.JoinMethodKubernetes,
		"service_account": sa.String(), "namespace": sa.Namespace,
	}
	if sa.PodName != "" {
		details["pod"] = sa.PodName
		details["pod_uid"] = sa.PodUID
	}
	if sa.NodeName != "" {
		details["node"] = sa.NodeName
	}
	if !k.Allows(sa.Namespace, sa.Name) {
		details["check"] = "allow"
		return nil, s.joinDeniedWith(ctx, req, bot, name, "service account "+sa.String()+" is not in the join token's allow list",
			fmt.Sprintf("service account %s may not join with token %s: an admin can add {service_account: \"%s\"} to its spec.kubernetes.allow", sa, name, sa), details)
	}
	return s.joined(ctx, req, bot, pub, details)
}

// recordJoinError audits a kubernetes join that could not be checked.
func (s *Server) recordJoinError(ctx context.Context, req *authv1.JoinRequest, bot, token string, err error) {
	_ = s.joinDeniedWith(ctx, req, bot, token, "the service-account token could not be checked: "+err.Error(), "", map[string]string{"check": "unavailable"})
}
