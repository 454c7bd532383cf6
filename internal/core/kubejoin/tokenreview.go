package kubejoin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/wid-project/wid/internal/core/resource"
)

// In-cluster defaults of the TokenReview mode: the auth service's own
// service account, as every pod has it mounted.
const (
	InClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	InClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// Extra keys the API server sets for tokens bound to a pod.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// tokenReview is authentication.k8s.io/v1 TokenReview, the fields we use.
type tokenReview struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Spec       tokenReviewSpec   `json:"spec"`
	Status     tokenReviewStatus `json:"status,omitzero"`
}

type tokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

type tokenReviewStatus struct {
	Authenticated bool     `json:"authenticated,omitempty"`
	User          userInfo `json:"user,omitzero"`
	Audiences     []string `json:"audiences,omitempty"`
	Error         string   `json:"error,omitempty"`
}

type userInfo struct {
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// review asks the API server of cluster c (nil: the cluster the auth
// service runs in) whether token is a service-account token for audience,
// with the auth service's own credentials.
func (v *Verifier) review(ctx context.Context, c *Cluster, audience, token string) (ServiceAccount, error) {
	var server, caFile, tokenFile string
	if c != nil {
		server, caFile, tokenFile = c.APIServer, c.CAFile, c.TokenFile
		if server == "" {
			return ServiceAccount{}, fmt.Errorf("the join token asks kubernetes cluster %s for a TokenReview, but the cluster has no api_server in the auth service's kubernetes_clusters", c.Name)
		}
	} else {
		host, port := v.env("KUBERNETES_SERVICE_HOST"), v.env("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return ServiceAccount{}, fmt.Errorf("the join token asks for a TokenReview but the auth service does not run in a cluster (KUBERNETES_SERVICE_HOST is unset): configure the cluster under kubernetes_clusters and name it in the token's spec.kubernetes.cluster")
		}
		server, caFile, tokenFile = "https://"+net.JoinHostPort(host, port), InClusterCAFile, InClusterTokenFile
	}
	hc, err := httpClient(caFile)
	if err != nil {
		return ServiceAccount{}, err
	}
	body, err := json.Marshal(tokenReview{
		APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview",
		Spec: tokenReviewSpec{Token: token, Audiences: []string{audience}},
	})
	if err != nil {
		return ServiceAccount{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	url := strings.TrimSuffix(server, "/") + "/apis/authentication.k8s.io/v1/tokenreviews"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("asking the Kubernetes TokenReview API: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if err := setBearer(req, tokenFile); err != nil {
		return ServiceAccount{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("asking the Kubernetes TokenReview API at %s: %w", server, cleanURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return ServiceAccount{}, fmt.Errorf("reading the TokenReview answer from %s: %w", server, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return ServiceAccount{}, fmt.Errorf("the Kubernetes API at %s refused the auth service's TokenReview (%s): bind the auth service's service account to the ClusterRole system:auth-delegator", server, resp.Status)
	case resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK:
		return ServiceAccount{}, fmt.Errorf("the Kubernetes API at %s answered the TokenReview with %s", server, resp.Status)
	}
	var tr tokenReview
	if err := json.Unmarshal(data, &tr); err != nil || tr.Kind != "TokenReview" {
		return ServiceAccount{}, fmt.Errorf("the Kubernetes API at %s answered the TokenReview with something that is not a TokenReview", server)
	}
	return reviewed(tr.Status, audience)
}

// reviewed turns a TokenReview's status into a service account.
func reviewed(st tokenReviewStatus, audience string) (ServiceAccount, error) {
	if !st.Authenticated {
		reason := "no reason given"
		if st.Error != "" {
			reason = truncate(st.Error)
		}
		if strings.Contains(st.Error, "audience") {
			return ServiceAccount{}, refuse(CheckAudience, "the Kubernetes API did not accept the token for audience %s (%s): set audience: %s in the projected service-account token volume", audience, reason, audience)
		}
		return ServiceAccount{}, refuse(CheckTokenReview, "the Kubernetes API did not authenticate the service-account token (%s)", reason)
	}
	// An authenticator that ignores audiences answers none; one that
	// knows them must name ours.
	if len(st.Audiences) > 0 && !slices.Contains(st.Audiences, audience) {
		return ServiceAccount{}, refuse(CheckAudience, "the Kubernetes API authenticated the token for %s, not %s: set audience: %s in the projected service-account token volume", audienceList(st.Audiences), audience, audience)
	}
	rest, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	if !ok {
		return ServiceAccount{}, refuse(CheckServiceAccount, "the token belongs to %q, which is not a service account", truncate(st.User.Username))
	}
	ns, name, err := resource.ParseServiceAccount(rest, false)
	if err != nil {
		return ServiceAccount{}, refuse(CheckServiceAccount, "the token's service account %s", err)
	}
	sa := ServiceAccount{Namespace: ns, Name: name}
	sa.PodName = first(st.User.Extra[extraPodName])
	sa.PodUID = first(st.User.Extra[extraPodUID])
	sa.NodeName = first(st.User.Extra[extraNodeName])
	if sa.PodName == "" {
		// Only tokens bound to a pod carry it; legacy secret-based tokens
		// live forever and must not join.
		return ServiceAccount{}, refuse(CheckLifetime, "the token of %s is not bound to a pod: use a projected service-account token, not a legacy secret-based one", sa)
	}
	return sa, nil
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
