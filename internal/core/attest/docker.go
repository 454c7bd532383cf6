package attest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Attribute names set by the docker attestor; container labels are
// AttrDockerLabels + "." + key (see addLabels).
const (
	AttrDockerContainerID = "workload.docker.container_id"
	AttrDockerImage       = "workload.docker.image"
	AttrDockerImageID     = "workload.docker.image_id"
	AttrDockerName        = "workload.docker.name"
	AttrDockerLabels      = "workload.docker.labels"
)

// Defaults of DockerOptions.
const (
	DefaultDockerSocket     = "/var/run/docker.sock"
	DefaultDockerAPIVersion = "1.41"
	DefaultDockerTimeout    = 5 * time.Second
	DefaultDockerCacheTTL   = 10 * time.Second
)

// Bounds of the docker attestor: an inspect answer (with its environment
// and mounts) is a few KiB.
const (
	dockerMaxResponse = 4 << 20
	dockerCacheSize   = 1024
)

// DockerOptions configures NewDocker.
type DockerOptions struct {
	// Socket is the Docker Engine API's unix socket; "" means
	// /var/run/docker.sock.
	Socket string
	// APIVersion prefixes request paths (/v1.41/...); "" means 1.41,
	// which Docker 20.10 and later serve.
	APIVersion string
	// Timeout bounds one request; 0 means 5s.
	Timeout time.Duration
	// CacheTTL is how long a container's attributes are reused; 0 means
	// 10s. A renamed container shows its new name after this time.
	CacheTTL time.Duration
	// Logger gets debug records only; nil discards them.
	Logger *slog.Logger
}

// Docker attests processes in Docker containers: the container id from the
// caller's cgroups, the rest from the Docker Engine API. Safe for
// concurrent use.
type Docker struct {
	socket  string
	prefix  string
	client  *http.Client
	timeout time.Duration
	ttl     time.Duration
	log     *slog.Logger
	flight  singleflight.Group

	mu    sync.Mutex
	cache map[string]dockerEntry
}

type dockerEntry struct {
	attrs   map[string]string
	expires time.Time
}

var apiVersionRE = regexp.MustCompile(`^v?[0-9]+\.[0-9]+$`)

// NewDocker checks opts and returns a docker attestor.
func NewDocker(opts DockerOptions) (*Docker, error) {
	opts.Socket = cmp.Or(opts.Socket, DefaultDockerSocket)
	opts.APIVersion = cmp.Or(opts.APIVersion, DefaultDockerAPIVersion)
	if !apiVersionRE.MatchString(opts.APIVersion) {
		return nil, fmt.Errorf("docker api_version %q is not a version such as %s", opts.APIVersion, DefaultDockerAPIVersion)
	}
	if opts.Timeout < 0 || opts.CacheTTL < 0 {
		return nil, errors.New("the docker attestor's timeout and cache_ttl must not be negative")
	}
	d := &Docker{
		socket:  opts.Socket,
		prefix:  "/v" + strings.TrimPrefix(opts.APIVersion, "v"),
		timeout: cmp.Or(opts.Timeout, DefaultDockerTimeout),
		ttl:     cmp.Or(opts.CacheTTL, DefaultDockerCacheTTL),
		log:     opts.Logger,
		cache:   map[string]dockerEntry{},
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	socket := d.socket
	d.client = &http.Client{
		Timeout: d.timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", socket)
			},
			MaxIdleConns:    4,
			IdleConnTimeout: 30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the Docker daemon redirected: refusing to follow")
		},
	}
	return d, nil
}

// Name is "docker".
func (d *Docker) Name() string { return "docker" }

// Attest returns workload.docker.container_id, .name (without the leading
// '/'), .image (as the container was created from it, nginx:1.25),
// .image_id (sha256:...) and .labels.<key> of the caller's container.
func (d *Docker) Attest(ctx context.Context, p Peer, cg Cgroups) (map[string]string, error) {
	id, err := cg.DockerContainer()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	e, ok := d.cache[id]
	d.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.attrs, nil
	}
	ch := d.flight.DoChan(id, func() (any, error) {
		attrs, err := d.inspect(context.WithoutCancel(ctx), id)
		if err != nil {
			return nil, err
		}
		d.mu.Lock()
		if len(d.cache) >= dockerCacheSize {
			now := time.Now()
			for k, e := range d.cache {
				if !now.Before(e.expires) || len(d.cache) >= dockerCacheSize {
					delete(d.cache, k)
				}
			}
		}
		d.cache[id] = dockerEntry{attrs: attrs, expires: time.Now().Add(d.ttl)}
		d.mu.Unlock()
		return attrs, nil
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for Docker: %w", context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(map[string]string), nil
	}
}

// dockerContainer is the part of GET /containers/{id}/json the attestor
// reads, with the Engine API's field names.
type dockerContainer struct {
	ID     string `json:"Id"`
	Name   string `json:"Name"`
	Image  string `json:"Image"` // the image id
	Config struct {
		Image  string            `json:"Image"` // as given to docker run
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
}

func (d *Docker) inspect(ctx context.Context, id string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+d.prefix+"/containers/"+id+"/json", nil)
	if err != nil {
		return nil, fmt.Errorf("asking Docker about container %s: %w", id, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err) {
			return nil, fmt.Errorf("the Docker daemon at %s did not answer within %s", d.socket, d.timeout)
		}
		return nil, fmt.Errorf("asking Docker at %s about container %s: %w: is the docker socket right and the agent allowed to use it?", d.socket, id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, dockerMaxResponse+1))
	if err != nil || ctx.Err() != nil {
		if ctx.Err() != nil || os.IsTimeout(err) {
			return nil, fmt.Errorf("the Docker daemon at %s did not finish its answer within %s", d.socket, d.timeout)
		}
		return nil, fmt.Errorf("reading Docker's answer about container %s: %w", id, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("the Docker daemon knows no container %s: the caller's container is not Docker's (is it containerd's or CRI-O's?)", id)
	case resp.StatusCode != http.StatusOK:
		var msg struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &msg)
		if msg.Message != "" {
			return nil, fmt.Errorf("the Docker daemon answered %s about container %s: %s", resp.Status, id, clip([]byte(msg.Message)))
		}
		return nil, fmt.Errorf("the Docker daemon answered %s about container %s", resp.Status, id)
	case len(body) > dockerMaxResponse:
		return nil, fmt.Errorf("the Docker daemon's answer about container %s is larger than %d bytes", id, dockerMaxResponse)
	}
	c, err := parseDockerContainer(body)
	if err != nil {
		return nil, fmt.Errorf("the Docker daemon answered something that is not a container about %s: %w", id, err)
	}
	if c.ID != id {
		return nil, fmt.Errorf("the Docker daemon answered about container %q when asked about %s", clip([]byte(c.ID)), id)
	}
	attrs := map[string]string{AttrDockerContainerID: id}
	if name := strings.TrimPrefix(c.Name, "/"); name != "" {
		attrs[AttrDockerName] = name
	}
	if c.Config.Image != "" {
		attrs[AttrDockerImage] = c.Config.Image
	}
	if c.Image != "" {
		attrs[AttrDockerImageID] = c.Image
	}
	addLabels(attrs, AttrDockerLabels, c.Config.Labels)
	return attrs, nil
}

func parseDockerContainer(b []byte) (*dockerContainer, error) {
	var c dockerContainer
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if c.ID == "" {
		return nil, errors.New("it has no Id")
	}
	return &c, nil
}
