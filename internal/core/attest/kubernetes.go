package attest

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Attribute names set by the kubernetes attestor; pod labels are
// AttrKubernetesLabels + "." + key (see addLabels).
const (
	AttrKubernetesNamespace        = "workload.kubernetes.namespace"
	AttrKubernetesServiceAccount   = "workload.kubernetes.service_account"
	AttrKubernetesPodName          = "workload.kubernetes.pod_name"
	AttrKubernetesPodUID           = "workload.kubernetes.pod_uid"
	AttrKubernetesContainerName    = "workload.kubernetes.container_name"
	AttrKubernetesContainerImage   = "workload.kubernetes.container_image"
	AttrKubernetesContainerImageID = "workload.kubernetes.container_image_id"
	AttrKubernetesLabels           = "workload.kubernetes.labels"
	// AttrKubernetesAttested is "true" when the kubernetes attestor found
	// the caller's pod (see Chain and AttestedAttribute).
	AttrKubernetesAttested = "workload.kubernetes.attested"
)

// Defaults of KubernetesOptions.
const (
	DefaultKubeletURL = "http://127.0.0.1:10255"
	// DefaultKubeletSecurePort is the kubelet's authenticated port, used
	// with KubernetesOptions.NodeName.
	DefaultKubeletSecurePort = "10250"
	DefaultKubeletTokenFile  = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultKubeletCAFile     = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultKubeletTimeout    = 5 * time.Second
	DefaultKubeletMaxBytes   = 32 << 20
	DefaultKubeletCacheTTL   = 2 * time.Second
)

// kubeletMinRefresh: a container missing from a pod list this old is looked
// for in a new one (it may have started since).
const kubeletMinRefresh = 250 * time.Millisecond

// KubernetesOptions configures NewKubernetes.
type KubernetesOptions struct {
	// KubeletURL is the kubelet's base URL: the read-only port
	// (http://127.0.0.1:10255, the default) or the secure port
	// (https://<node>:10250).
	KubeletURL string
	// NodeName is the node the agent runs on (from the downward API's
	// spec.nodeName, WID_NODE_NAME): with no KubeletURL it makes the
	// secure port's URL https://<NodeName>:10250, as the kubelet's serving
	// certificate names the node.
	NodeName string
	// TokenFile holds the bearer token for the secure port, read again for
	// every request since projected tokens rotate; "" means the pod's
	// service-account token. Unused over http.
	TokenFile string
	// CAFile verifies the kubelet's certificate on the secure port; ""
	// means the service account's ca.crt.
	CAFile string
	// InsecureSkipVerify accepts any kubelet certificate. Only for kubelets
	// whose self-signed serving certificate no CA vouches for.
	InsecureSkipVerify bool
	// Timeout bounds one request to the kubelet; 0 means 5s.
	Timeout time.Duration
	// MaxResponseBytes bounds the pod list; 0 means 32 MiB.
	MaxResponseBytes int64
	// CacheTTL is how long a pod list answers callers; 0 means 2s.
	CacheTTL time.Duration
	// Logger gets debug records only; nil discards them.
	Logger *slog.Logger
}

// Kubernetes attests processes in Kubernetes pods: the pod uid and container
// id from the caller's cgroups, the pod from the local kubelet's /pods. Safe
// for concurrent use; callers share one request to the kubelet at a time.
type Kubernetes struct {
	url       string
	tokenFile string
	client    *http.Client
	timeout   time.Duration
	maxBytes  int64
	ttl       time.Duration
	// minRefresh is kubeletMinRefresh; tests shorten it.
	minRefresh time.Duration
	log        *slog.Logger
	flight     singleflight.Group

	mu      sync.Mutex
	pods    *podList
	fetched time.Time
}

// NewKubernetes checks opts and returns a kubernetes attestor.
func NewKubernetes(opts KubernetesOptions) (*Kubernetes, error) {
	if opts.NodeName != "" {
		if !validNodeName(opts.NodeName) {
			return nil, fmt.Errorf("node name %q (WID_NODE_NAME or node_name) is not a Kubernetes node name: give the pod's spec.nodeName from the downward API", opts.NodeName)
		}
		if opts.KubeletURL == "" {
			opts.KubeletURL = "https://" + opts.NodeName + ":" + DefaultKubeletSecurePort
		}
	}
	if opts.KubeletURL == "" {
		opts.KubeletURL = DefaultKubeletURL
	}
	u, err := url.Parse(opts.KubeletURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("kubelet_url %q is not an http:// or https:// URL with a host, such as %s or https://node-1:10250", opts.KubeletURL, DefaultKubeletURL)
	}
	if opts.Timeout < 0 || opts.MaxResponseBytes < 0 || opts.CacheTTL < 0 {
		return nil, errors.New("the kubernetes attestor's timeout, max_response_bytes and cache_ttl must not be negative")
	}
	k := &Kubernetes{
		url:        strings.TrimSuffix(u.String(), "/") + "/pods",
		timeout:    cmp.Or(opts.Timeout, DefaultKubeletTimeout),
		maxBytes:   cmp.Or(opts.MaxResponseBytes, DefaultKubeletMaxBytes),
		ttl:        cmp.Or(opts.CacheTTL, DefaultKubeletCacheTTL),
		log:        opts.Logger,
		minRefresh: kubeletMinRefresh,
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil // the kubelet is on this node
	if u.Scheme == "https" {
		k.tokenFile = cmp.Or(opts.TokenFile, DefaultKubeletTokenFile)
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.InsecureSkipVerify {
			tc.InsecureSkipVerify = true
		} else {
			caFile := cmp.Or(opts.CAFile, DefaultKubeletCAFile)
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("reading the kubelet's CA file: %w: set ca_file, or skip_verify: true if the kubelet's certificate is self-signed", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("the kubelet's CA file %s holds no PEM certificate", caFile)
			}
			tc.RootCAs = pool
		}
		transport.TLSClientConfig = tc
	}
	k.client = &http.Client{Transport: transport, Timeout: k.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the kubelet redirected: refusing to follow")
		}}
	return k, nil
}

// validNodeName: a node name is a DNS subdomain (RFC 1123), at most 253
// characters, so it can be nothing but a URL's host.
func validNodeName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// Name is "kubernetes".
func (k *Kubernetes) Name() string { return "kubernetes" }

// Attest returns the attributes of the pod and container of p:
// workload.kubernetes.namespace, .service_account, .pod_name, .pod_uid,
// .container_name, .container_image (as the pod spec names it),
// .container_image_id and .labels.<key>. The container is looked for among
// the pod's containers, init containers and ephemeral containers.
func (k *Kubernetes) Attest(ctx context.Context, p Peer, cg Cgroups) (map[string]string, error) {
	ref, err := cg.Container()
	if err != nil {
		return nil, err
	}
	pods, at, err := k.podList(ctx, time.Time{})
	if err != nil {
		return nil, err
	}
	attrs, err := pods.find(ref)
	if errors.Is(err, errNotListed) && time.Since(at) >= k.minRefresh {
		// The container may have started after this list was taken.
		if pods, _, err = k.podList(ctx, at.Add(time.Nanosecond)); err != nil {
			return nil, err
		}
		attrs, err = pods.find(ref)
	}
	return attrs, err
}

// podList returns a pod list taken at or after notBefore and no older than
// the cache TTL, fetching one if need be.
func (k *Kubernetes) podList(ctx context.Context, notBefore time.Time) (*podList, time.Time, error) {
	k.mu.Lock()
	pods, at := k.pods, k.fetched
	k.mu.Unlock()
	if pods != nil && !at.Before(notBefore) && time.Since(at) < k.ttl {
		return pods, at, nil
	}
	// The fetch outlives a caller that gives up: others may wait for it.
	ch := k.flight.DoChan("pods", func() (any, error) {
		start := time.Now()
		pods, err := k.fetch(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		k.mu.Lock()
		k.pods, k.fetched = pods, start
		k.mu.Unlock()
		k.log.Debug("fetched the kubelet's pod list", "pods", len(pods.Items), "took", time.Since(start))
		return fetchedPods{pods, start}, nil
	})
	select {
	case <-ctx.Done():
		return nil, time.Time{}, fmt.Errorf("waiting for the kubelet: %w", context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return nil, time.Time{}, r.Err
		}
		f := r.Val.(fetchedPods)
		return f.pods, f.at, nil
	}
}

type fetchedPods struct {
	pods *podList
	at   time.Time
}

func (k *Kubernetes) fetch(ctx context.Context) (*podList, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("asking the kubelet for its pods: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if k.tokenFile != "" {
		tok, err := os.ReadFile(k.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading the token for the kubelet: %w: set token_file to the node agent's service-account token", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := k.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			return nil, fmt.Errorf("the kubelet at %s did not answer within %s: is it overloaded?", k.url, k.timeout)
		}
		return nil, fmt.Errorf("asking the kubelet at %s for its pods: %w: is kubelet_url right and the kubelet running?", k.url, err)
	}
	defer resp.Body.Close()
	if ctx.Err() != nil {
		// Headers that came only as the deadline passed (over HTTP/2 a
		// cancelled stream can still hand back its response): the kubelet
		// did not answer in time.
		return nil, fmt.Errorf("the kubelet at %s did not answer within %s: is it overloaded?", k.url, k.timeout)
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		hint := ""
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			hint = ": the agent's service account needs get on nodes/proxy (and nodes/pods)"
		}
		return nil, fmt.Errorf("the kubelet at %s answered %s%s", k.url, resp.Status, hint)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, k.maxBytes+1))
	if err != nil || ctx.Err() != nil {
		if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			return nil, fmt.Errorf("the kubelet at %s did not finish its answer within %s", k.url, k.timeout)
		}
		return nil, fmt.Errorf("reading the kubelet's pod list: %w", err)
	}
	if int64(len(body)) > k.maxBytes {
		return nil, fmt.Errorf("the kubelet's pod list is larger than %d bytes: raise max_response_bytes", k.maxBytes)
	}
	pods, err := parsePodList(body)
	if err != nil {
		return nil, fmt.Errorf("the kubelet at %s answered something that is not a pod list: %w", k.url, err)
	}
	return pods, nil
}

// podList is the part of a core/v1 PodList the attestor reads, with the
// API's JSON field names.
type podList struct {
	Kind  string `json:"kind"`
	Items []pod  `json:"items"`
}

type pod struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		UID       string            `json:"uid"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName  string         `json:"serviceAccountName"`
		Containers          []podContainer `json:"containers"`
		InitContainers      []podContainer `json:"initContainers"`
		EphemeralContainers []podContainer `json:"ephemeralContainers"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses          []containerStatus `json:"containerStatuses"`
		InitContainerStatuses      []containerStatus `json:"initContainerStatuses"`
		EphemeralContainerStatuses []containerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type podContainer struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

type containerStatus struct {
	Name        string `json:"name"`
	Image       string `json:"image"`
	ImageID     string `json:"imageID"`
	ContainerID string `json:"containerID"`
}

// parsePodList decodes the kubelet's /pods answer.
func parsePodList(b []byte) (*podList, error) {
	var l podList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, err
	}
	if l.Kind != "PodList" {
		return nil, fmt.Errorf("its kind is %q, not PodList", clip([]byte(l.Kind)))
	}
	return &l, nil
}

// errNotListed: the pod or container is not (yet) in the pod list.
var errNotListed = errors.New("not in the kubelet's pod list")

type notListedError struct{ msg string }

func (e *notListedError) Error() string { return e.msg }
func (e *notListedError) Unwrap() error { return errNotListed }

// find returns the attributes of the container ref names.
func (l *podList) find(ref ContainerRef) (map[string]string, error) {
	var (
		found     *pod
		status    *containerStatus
		podListed bool
	)
	for i := range l.Items {
		p := &l.Items[i]
		if ref.PodUID != "" && p.Metadata.UID != ref.PodUID {
			continue
		}
		podListed = true
		for _, list := range [][]containerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses, p.Status.EphemeralContainerStatuses} {
			for j := range list {
				if containerIDOf(list[j].ContainerID) != ref.ID {
					continue
				}
				if found != nil {
					return nil, fmt.Errorf("the kubelet lists container %s in two pods, %s/%s and %s/%s: refusing to choose", ref.ID, found.Metadata.Namespace, found.Metadata.Name, p.Metadata.Namespace, p.Metadata.Name)
				}
				found, status = p, &list[j]
			}
		}
	}
	switch {
	case found != nil:
	case ref.PodUID != "" && !podListed:
		return nil, &notListedError{fmt.Sprintf("the kubelet lists no pod with uid %s: is the agent on the node the pod runs on?", ref.PodUID)}
	case ref.PodUID != "":
		return nil, &notListedError{fmt.Sprintf("pod %s lists no container %s: it is starting, or the caller is its sandbox", ref.PodUID, ref.ID)}
	default:
		return nil, &notListedError{fmt.Sprintf("the kubelet lists no pod with container %s", ref.ID)}
	}
	attrs := map[string]string{
		AttrKubernetesNamespace:     found.Metadata.Namespace,
		AttrKubernetesPodName:       found.Metadata.Name,
		AttrKubernetesPodUID:        found.Metadata.UID,
		AttrKubernetesContainerName: status.Name,
	}
	if sa := found.Spec.ServiceAccountName; sa != "" {
		attrs[AttrKubernetesServiceAccount] = sa
	}
	image := status.Image
	for _, list := range [][]podContainer{found.Spec.Containers, found.Spec.InitContainers, found.Spec.EphemeralContainers} {
		for _, c := range list {
			if c.Name == status.Name && c.Image != "" {
				image = c.Image
			}
		}
	}
	if image != "" {
		attrs[AttrKubernetesContainerImage] = image
	}
	if status.ImageID != "" {
		attrs[AttrKubernetesContainerImageID] = status.ImageID
	}
	for k, v := range attrs {
		if v == "" {
			delete(attrs, k)
		}
	}
	addLabels(attrs, AttrKubernetesLabels, found.Metadata.Labels)
	return attrs, nil
}

// containerIDOf strips the runtime's scheme: containerd://<id>, cri-o://<id>,
// docker://<id>.
func containerIDOf(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		return s[i+3:]
	}
	return s
}
