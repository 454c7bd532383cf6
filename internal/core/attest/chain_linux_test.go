package attest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// failing is a source that always fails with err.
type failing struct {
	name string
	err  error
}

func (f failing) Name() string { return f.name }
func (f failing) Attest(context.Context, Peer, Cgroups) (map[string]string, error) {
	return nil, f.err
}

func TestChain(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	fp.write(t, "cgroup", string(mustRead(t, "testdata/cgroup/dockershim-v2.txt")))
	k := newKubelet(t, true)
	d := newDockerd(t)
	docker, err := NewDocker(DockerOptions{Socket: d.socket})
	if err != nil {
		t.Fatal(err)
	}
	// The report pod's container runs on Docker here.
	k.set(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(strings.ReplaceAll(string(mustRead(t, "testdata/kubelet/pods.json")), "cri-o://"+fixtureContainer2, "docker://"+fixtureDocker)))
	})
	c := NewChain(ChainOptions{
		Unix:     newFakeUnix(fp, UnixOptions{}),
		Sources:  []Source{k.attestor(t, KubernetesOptions{}), docker, NewSystemd(SystemdOptions{CgroupOnly: true})},
		ProcRoot: fp.root,
	})
	res, err := c.Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		AttrUID:                     "1000",
		AttrUser:                    "alice",
		AttrKubernetesNamespace:     "batch",
		AttrKubernetesPodUID:        "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80",
		AttrDockerName:              "shop-web-1",
		AttrSystemdUnit:             "docker-" + fixtureDocker + ".scope",
		AttrUnixAttested:            "true",
		AttrKubernetesAttested:      "true",
		"workload.docker.attested":  "true",
		"workload.systemd.attested": "true",
	} {
		if res.Attributes[name] != want {
			t.Errorf("%s = %q, want %q", name, res.Attributes[name], want)
		}
	}
	if len(res.Reasons) != 0 {
		t.Errorf("reasons = %q, want none", res.Reasons)
	}
}

func TestChainFailingSourcesGiveReasons(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	fp.write(t, "cgroup", "0::/system.slice/nginx.service\n")
	k := newKubelet(t, true)
	hang := make(chan struct{})
	defer close(hang)
	k.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	unix := newFakeUnix(fp, UnixOptions{})
	c := NewChain(ChainOptions{
		Unix: unix,
		Sources: []Source{
			// Pointed at a container-less process, and also hanging:
			// the cgroup decides first.
			k.attestor(t, KubernetesOptions{Timeout: time.Minute}),
			failing{"slow", context.DeadlineExceeded},
			NewSystemd(SystemdOptions{CgroupOnly: true}),
		},
		ProcRoot: fp.root,
		Timeout:  200 * time.Millisecond,
	})
	res, err := c.Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	if res.Attributes[AttrSystemdUnit] != "nginx.service" || res.Attributes[AttrUser] != "alice" {
		t.Fatalf("attributes = %v, want the unix and systemd ones", res.Attributes)
	}
	// A source that failed is not attested: a rule on
	// workload.kubernetes.attested tells it from one that ran.
	if _, ok := res.Attributes[AttrKubernetesAttested]; ok {
		t.Fatalf("attributes = %v: %s is set although the kubernetes attestor failed", res.Attributes, AttrKubernetesAttested)
	}
	if res.Attributes["workload.systemd.attested"] != "true" || res.Attributes[AttrUnixAttested] != "true" {
		t.Fatalf("attributes = %v, want workload.systemd.attested and workload.unix.attested true", res.Attributes)
	}
	want := []string{
		`kubernetes attestor: the calling process runs in no container wid can recognize: its cgroup is "/system.slice/nginx.service", not a containerd, CRI-O, Docker or kubelet cgroup`,
		"slow attestor: no answer within 200ms: context deadline exceeded",
	}
	if strings.Join(res.Reasons, "\n") != strings.Join(want, "\n") {
		t.Fatalf("reasons =\n%s\nwant\n%s", strings.Join(res.Reasons, "\n"), strings.Join(want, "\n"))
	}
	unixOnly, err := unix.Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	if res.Key == unixOnly.Key || !strings.HasPrefix(res.Key, unixOnly.Key+"+") {
		t.Fatalf("chain key %q does not extend the unix key %q", res.Key, unixOnly.Key)
	}
	if _, ok := unixOnly.Attributes[AttrSystemdUnit]; ok {
		t.Fatal("the chain wrote into the unix attestor's attributes")
	}

	// A kubelet that hangs for a pod's process: the caller gets its
	// attributes and a reason within the chain's timeout.
	fp.write(t, "cgroup", string(mustRead(t, "testdata/cgroup/containerd-systemd-v2.txt")))
	start := time.Now()
	res, err = c.Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("attestation took %s with a hanging kubelet, want about the 200ms timeout", took)
	}
	if len(res.Reasons) == 0 || !strings.Contains(res.Reasons[0], "kubernetes attestor: no answer within 200ms: waiting for the kubelet: context deadline exceeded") {
		t.Fatalf("reasons = %q, want the kubelet's timeout", res.Reasons)
	}
	if res.Attributes[AttrUser] != "alice" {
		t.Fatalf("attributes = %v", res.Attributes)
	}
}

func TestChainProcessGone(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	fp.write(t, "cgroup", "0::/system.slice/nginx.service\n")
	c := NewChain(ChainOptions{Sources: []Source{NewSystemd(SystemdOptions{CgroupOnly: true})}, ProcRoot: fp.root})
	res, err := c.Attest(t.Context(), fakePeer)
	if err != nil || res.Attributes[AttrSystemdUnit] != "nginx.service" {
		t.Fatalf("Attest() without unix = %v, %v", res, err)
	}
	if _, ok := res.Attributes[AttrUID]; ok {
		t.Fatal("unix attributes without the unix attestor")
	}
	// The pid now belongs to a later process.
	fp.write(t, "stat", statLine(fakePID, "prog", 'S', 999))
	if _, err := c.Attest(t.Context(), fakePeer); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("Attest() of a reused pid = %v, want ErrProcessGone", err)
	}
	// A source saying the process is gone fails the attestation too.
	fp.write(t, "stat", statLine(fakePID, "prog", 'S', 100))
	c = NewChain(ChainOptions{Sources: []Source{failing{"x", gone("process %d exited", fakePID)}}, ProcRoot: fp.root})
	if _, err := c.Attest(t.Context(), fakePeer); !errors.Is(err, ErrProcessGone) {
		t.Fatalf("Attest() = %v, want ErrProcessGone", err)
	}
	// A cgroup file that is not one: every source says so.
	fp.write(t, "cgroup", "garbage\n")
	c = NewChain(ChainOptions{Sources: []Source{NewSystemd(SystemdOptions{CgroupOnly: true})}, ProcRoot: fp.root})
	res, err = c.Attest(t.Context(), fakePeer)
	if err != nil || len(res.Reasons) != 1 || !strings.Contains(res.Reasons[0], `systemd attestor: parsing `+fp.dir+`/cgroup: line 1 "garbage" is not hierarchy:controllers:path`) {
		t.Fatalf("Attest() with a bad cgroup file = %+v, %v", res, err)
	}
}

// BenchmarkChain: the cost the kubernetes, docker and systemd attestors add
// to a call, with their answers cached (a pod list within its TTL, a
// container's inspect, systemd's answer for the process).
func BenchmarkChain(b *testing.B) {
	fp := newFakeProc(b, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	fp.write(b, "cgroup", string(mustRead(b, "testdata/cgroup/dockershim-v2.txt")))
	k := newKubelet(b, true)
	d := newDockerd(b)
	docker, err := NewDocker(DockerOptions{Socket: d.socket})
	if err != nil {
		b.Fatal(err)
	}
	unix := newFakeUnix(fp, UnixOptions{})
	for _, bc := range []struct {
		name string
		a    interface {
			Attest(context.Context, Peer) (Result, error)
		}
	}{
		{"unix", unix},
		{"unix+kubernetes+docker+systemd", NewChain(ChainOptions{Unix: unix, ProcRoot: fp.root,
			Sources: []Source{k.attestor(b, KubernetesOptions{CacheTTL: time.Hour}), docker, NewSystemd(SystemdOptions{CgroupOnly: true})}})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := bc.a.Attest(b.Context(), fakePeer); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
