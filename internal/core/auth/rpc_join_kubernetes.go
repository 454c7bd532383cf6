package auth

import (
	"context"
	"errors"
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

// kubernetesJoinRefused is the one answer to a kubernetes join that does
// not pass, whatever failed (an unknown token name, a token of another
// method, an expired token, a missing bot, a service-account token refused
// or not allowed), so that a caller cannot learn which token names exist.
// The audit log keeps the real reason.
func (s *Server) kubernetesJoinRefused() string {
	return "the kubernetes join was refused: check the join token name, that the projected service-account token has audience " +
		s.KubernetesAudience() + " and that its service account is in the token's allow list"
}

// joinKubernetes admits an agent that presents a projected service-account
// token allowed by a kubernetes join token. Refusals never repeat the
// service-account token.
func (s *Server) joinKubernetes(ctx context.Context, req *authv1.JoinRequest) (*authv1.JoinResponse, error) {
	name := req.Token
	if name == "" {
		return nil, s.joinDenied(ctx, req, "", "", "no join token name given",
			"the kubernetes join needs the name of a kubernetes join token", authv1.NextKubernetesTokenName)
	}
	if err := resource.ValidateName(name); err != nil {
		return nil, s.joinDenied(ctx, req, "", "", "join token name is invalid",
			"the kubernetes join needs the name of a kubernetes join token, not a secret", authv1.NextKubernetesTokenName)
	}
	refused := s.kubernetesJoinRefused()
	v, err := s.res.get(ctx, resource.KindJoinToken, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, s.joinDenied(ctx, req, "", name, "unknown join token", refused, authv1.NextKubernetesJoinAudit)
		}
		return nil, storeError("token", err)
	}
	tok := v.(*resource.JoinToken)
	k := tok.Spec.Kubernetes
	if tok.Spec.Method != resource.JoinMethodKubernetes || k == nil {
		// Anonymous: naming the bot would tell which token this is.
		return nil, s.joinDenied(ctx, req, "", name, "join token is for method "+tok.Spec.Method, refused, authv1.NextKubernetesJoinAudit)
	}
	bot := tok.Spec.Bot
	if !tok.Spec.Expires.IsZero() && !s.clock().Before(tok.Spec.Expires) {
		exp := tok.Spec.Expires.Format(time.RFC3339)
		return nil, s.joinDenied(ctx, req, bot, name, "join token expired at "+exp, refused, authv1.NextKubernetesJoinAudit)
	}
	if _, err := s.res.bot(ctx, bot); err != nil {
		return nil, s.joinDenied(ctx, req, bot, name, "bot "+bot+" does not exist", refused, authv1.NextKubernetesJoinAudit)
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
				refused, map[string]string{"check": r.Check}, authv1.NextKubernetesJoinAudit)
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
		// The node the token names is the host, not what the agent
		// says: host locks and the audit log hold to what the cluster
		// vouched for.
		req.Host = sa.NodeName
	}
	if !k.Allows(sa.Namespace, sa.Name) {
		details["check"] = "allow"
		return nil, s.joinDeniedWith(ctx, req, bot, name, "service account "+sa.String()+" is not in the join token's allow list", refused, details, authv1.NextKubernetesJoinAudit)
	}
	return s.joined(ctx, req, bot, pub, details)
}

// checkKubernetesCluster refuses a kubernetes join token naming a cluster
// that the auth service's configuration does not define.
func (s *Server) checkKubernetesCluster(v resource.Resource) error {
	t, ok := v.(*resource.JoinToken)
	if !ok || t.Spec.Kubernetes == nil || t.Spec.Kubernetes.Cluster == "" || s.kube.HasCluster(t.Spec.Kubernetes.Cluster) {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "%s names kubernetes cluster %q, which the auth service does not define: an administrator of the auth host adds it under kubernetes_clusters in widagent's config file", resource.Ref(t), t.Spec.Kubernetes.Cluster)
}

// recordJoinError audits a kubernetes join that could not be checked.
func (s *Server) recordJoinError(ctx context.Context, req *authv1.JoinRequest, bot, token string, err error) {
	_ = s.joinDeniedWith(ctx, req, bot, token, "the service-account token could not be checked: "+err.Error(), "", map[string]string{"check": "unavailable"})
}
