package attest

import (
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dockerd is a stand-in for the Docker Engine API on a unix socket,
// answering GET /v1.41/containers/<id>/json from testdata/docker.
type dockerd struct {
	socket   string
	requests atomic.Int64
	answer   atomic.Pointer[http.HandlerFunc]
}

func newDockerd(t testing.TB) *dockerd {
	t.Helper()
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "dockerd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &dockerd{socket: filepath.Join(dir, "docker.sock")}
	inspect := mustRead(t, "testdata/docker/container.json")
	def := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1.41/containers/"+fixtureDocker+"/json" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"message":"No such container: ` + strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1.41/containers/"), "/json") + `"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Api-Version", "1.41")
		_, _ = w.Write(inspect)
	})
	d.answer.Store(&def)
	lis, err := net.Listen("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.requests.Add(1)
		(*d.answer.Load())(w, r)
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return d
}

func (d *dockerd) set(h http.HandlerFunc) { d.answer.Store(&h) }

func TestDockerAttest(t *testing.T) {
	d := newDockerd(t)
	a, err := NewDocker(DockerOptions{Socket: d.socket, CacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		AttrDockerContainerID: fixtureDocker,
		AttrDockerName:        "shop-web-1",
		AttrDockerImage:       "nginx:1.27",
		AttrDockerImageID:     "sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6",
		"workload.docker.labels.com.docker.compose.project":          "shop",
		"workload.docker.labels.com.docker.compose.service":          "web",
		"workload.docker.labels.com.docker.compose.container-number": "1",
		"workload.docker.labels.maintainer":                          "NGINX Docker Maintainers <docker-maint@nginx.com>",
		"workload.docker.labels.org.opencontainers.image.version":    "1.27",
	}
	for _, f := range []string{"docker-systemd-v2.txt", "docker-cgroupfs-v1.txt", "dockershim-v2.txt"} {
		got, err := a.Attest(t.Context(), fakePeer, readCgroupFixture(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%s: Attest() =\n%v\nwant\n%v", f, got, want)
		}
	}
	if n := d.requests.Load(); n != 1 {
		t.Fatalf("%d requests for one container within the cache TTL, want 1", n)
	}

	for _, tt := range []struct {
		file, wantErr string
	}{
		{"kind-v1.txt", "the Docker daemon knows no container " + fixtureKindNode + ": the caller's container is not Docker's"},
		{"containerd-systemd-v2.txt", "not a Docker container's (docker-<id>.scope or /docker/<id>)"},
		{"systemd-service-v2.txt", `its cgroup is "/system.slice/nginx.service"`},
	} {
		if got, err := a.Attest(t.Context(), fakePeer, readCgroupFixture(t, tt.file)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: Attest() = %v, %v; want error %q", tt.file, got, err, tt.wantErr)
		}
	}
}

func TestDockerBadAnswers(t *testing.T) {
	cg := readCgroupFixture(t, "docker-systemd-v2.txt")
	inspect := string(mustRead(t, "testdata/docker/container.json"))
	tests := []struct {
		name    string
		answer  http.HandlerFunc
		opts    DockerOptions
		wantErr string
	}{
		{name: "garbage", answer: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("garbage")) },
			wantErr: "answered something that is not a container about " + fixtureDocker + ": invalid character 'g'"},
		{name: "no id", answer: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"Name":"/x"}`)) },
			wantErr: "it has no Id"},
		{name: "another container", answer: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(strings.Replace(inspect, `"Id": "`+fixtureDocker, `"Id": "`+fixtureContainer1, 1)))
		}, wantErr: "answered about container \"" + fixtureContainer1 + "\" when asked about " + fixtureDocker},
		{name: "error message", answer: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"message":"daemon is shutting down"}`))
		}, wantErr: "answered 500 Internal Server Error about container " + fixtureDocker + ": daemon is shutting down"},
		{name: "too large", answer: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"Id":"` + strings.Repeat("a", dockerMaxResponse) + `"}`))
		}, wantErr: "is larger than 4194304 bytes"},
		{name: "slow", opts: DockerOptions{Timeout: 100 * time.Millisecond}, answer: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			wantErr: "did not answer within 100ms"},
		{name: "old api version", opts: DockerOptions{APIVersion: "v1.24"},
			wantErr: "the Docker daemon knows no container " + fixtureDocker},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDockerd(t)
			if tt.answer != nil {
				d.set(tt.answer)
			}
			tt.opts.Socket = d.socket
			a, err := NewDocker(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := a.Attest(t.Context(), fakePeer, cg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Attest() = %v, %v; want error %q", got, err, tt.wantErr)
			}
		})
	}

	a, err := NewDocker(DockerOptions{Socket: filepath.Join(t.TempDir(), "none.sock")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Attest(t.Context(), fakePeer, cg); err == nil || !strings.Contains(err.Error(), "is the docker socket right and the agent allowed to use it?") {
		t.Fatalf("Attest() without a daemon = %v", err)
	}
	for _, v := range []string{"latest", "1", "1.41/../x"} {
		if _, err := NewDocker(DockerOptions{APIVersion: v}); err == nil || !strings.Contains(err.Error(), "is not a version such as 1.41") {
			t.Errorf("NewDocker(api_version %q) = %v", v, err)
		}
	}
}
