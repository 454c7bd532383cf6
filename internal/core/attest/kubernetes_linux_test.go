package attest

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	fixtureInitContainer      = "7e2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a9"
	fixtureEphemeralContainer = "8f3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8b0"
	fixtureStaticContainer    = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	kubeletToken              = "node-agent-token"
)

// kubelet is a stand-in for the kubelet's secure port: /pods with a bearer
// token, answering what the test sets.
type kubelet struct {
	srv      *httptest.Server
	caFile   string
	tokFile  string
	requests atomic.Int64

	mu     sync.Mutex
	answer func(w http.ResponseWriter, r *http.Request)
}

func newKubelet(t testing.TB, tlsOn bool) *kubelet {
	t.Helper()
	pods, err := os.ReadFile(filepath.Join("testdata", "kubelet", "pods.json"))
	if err != nil {
		t.Fatal(err)
	}
	k := &kubelet{}
	k.answer = func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(pods)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.requests.Add(1)
		if r.URL.Path != "/pods" {
			http.NotFound(w, r)
			return
		}
		if tlsOn && r.Header.Get("Authorization") != "Bearer "+kubeletToken {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		k.mu.Lock()
		answer := k.answer
		k.mu.Unlock()
		answer(w, r)
	})
	if tlsOn {
		k.srv = httptest.NewTLSServer(h)
		dir := t.TempDir()
		k.caFile = filepath.Join(dir, "ca.crt")
		k.tokFile = filepath.Join(dir, "token")
		ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw})
		if err := os.WriteFile(k.caFile, ca, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(k.tokFile, []byte(kubeletToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		k.srv = httptest.NewServer(h)
	}
	t.Cleanup(k.srv.Close)
	return k
}

func (k *kubelet) set(answer func(w http.ResponseWriter, r *http.Request)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.answer = answer
}

func (k *kubelet) attestor(t testing.TB, opts KubernetesOptions) *Kubernetes {
	t.Helper()
	opts.KubeletURL = k.srv.URL
	if k.caFile != "" {
		opts.CAFile = cmp.Or(opts.CAFile, k.caFile)
		opts.TokenFile = cmp.Or(opts.TokenFile, k.tokFile)
	}
	a, err := NewKubernetes(opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func cgroupLine(path string) Cgroups { return Cgroups{{Hierarchy: 0, Path: path}} }

func TestKubernetesAttest(t *testing.T) {
	k := newKubelet(t, true)
	a := k.attestor(t, KubernetesOptions{CacheTTL: time.Hour})
	web := map[string]string{
		AttrKubernetesNamespace:                             "shop",
		AttrKubernetesServiceAccount:                        "web",
		AttrKubernetesPodName:                               "web-7c9d8f6b5d-x2kqz",
		AttrKubernetesPodUID:                                "2c48913c-b29f-11e7-9350-020968147796",
		AttrKubernetesContainerName:                         "web",
		AttrKubernetesContainerImage:                        "ghcr.io/example/web:1.4.2",
		AttrKubernetesContainerImageID:                      "ghcr.io/example/web@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
		"workload.kubernetes.labels.app.kubernetes.io.name": "web",
		"workload.kubernetes.labels.tier":                   "frontend",
		"workload.kubernetes.labels.pod-template-hash":      "7c9d8f6b5d",
	}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := maps.Clone(m)
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	report := map[string]string{
		AttrKubernetesNamespace:                                         "batch",
		AttrKubernetesServiceAccount:                                    "worker",
		AttrKubernetesPodName:                                           "report-28812345-q8t4w",
		AttrKubernetesPodUID:                                            "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80",
		AttrKubernetesContainerName:                                     "report",
		AttrKubernetesContainerImage:                                    "registry.example.com/batch/report:2026.11",
		AttrKubernetesContainerImageID:                                  "registry.example.com/batch/report@sha256:22bb33cc44dd55ee66ff778899001122334455667788990011223344556677aa",
		"workload.kubernetes.labels.job-name":                           "report-28812345",
		"workload.kubernetes.labels.batch.kubernetes.io.controller-uid": "3c2b1a09-8f7e-4d6c-b5a4-392817263544",
	}
	podSlice := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/"
	tests := []struct {
		name    string
		cg      Cgroups
		want    map[string]string
		wantErr string
	}{
		{name: "containerd systemd v2", cg: readCgroupFixture(t, "containerd-systemd-v2.txt"), want: web},
		{name: "containerd cgroupfs v1", cg: readCgroupFixture(t, "containerd-cgroupfs-v1.txt"), want: web},
		{name: "cri-o hybrid", cg: readCgroupFixture(t, "crio-systemd-hybrid.txt"), want: report},
		{name: "kind", cg: readCgroupFixture(t, "kind-v1.txt"), want: report},
		{name: "no pod uid in a cgroup namespace", cg: readCgroupFixture(t, "crio-cgroupns-v2.txt"), want: report},
		{name: "init container", cg: cgroupLine(podSlice + "cri-containerd-" + fixtureInitContainer + ".scope"),
			want: with(web, AttrKubernetesContainerName, "migrate", AttrKubernetesContainerImage, "ghcr.io/example/web-migrate:1.4.2",
				AttrKubernetesContainerImageID, "ghcr.io/example/web-migrate@sha256:11aa22bb33cc44dd55ee66ff778899001122334455667788990011223344556")},
		{name: "ephemeral container", cg: cgroupLine(podSlice + "cri-containerd-" + fixtureEphemeralContainer + ".scope"),
			want: with(web, AttrKubernetesContainerName, "debugger-abcde", AttrKubernetesContainerImage, "busybox:1.36",
				AttrKubernetesContainerImageID, "docker.io/library/busybox@sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7")},
		{name: "static pod without a service account", cg: cgroupLine("/kubepods.slice/kubepods-pod7d4e0c9e3f3a4a6b8c2d1e0f9a8b7c6d.slice/cri-containerd-" + fixtureStaticContainer + ".scope"),
			want: map[string]string{
				AttrKubernetesNamespace: "kube-system", AttrKubernetesPodName: "etcd-node-1", AttrKubernetesPodUID: "7d4e0c9e3f3a4a6b8c2d1e0f9a8b7c6d",
				AttrKubernetesContainerName: "etcd", AttrKubernetesContainerImage: "registry.k8s.io/etcd:3.5.15-0",
				AttrKubernetesContainerImageID:         "registry.k8s.io/etcd@sha256:a6dc63e6e8cfa0307d7851762fa6b629afb18f28d8aa3fab5a6e91b4af60026a",
				"workload.kubernetes.labels.component": "etcd", "workload.kubernetes.labels.tier": "control-plane"}},
		{name: "container of another pod", cg: cgroupLine(podSlice + "cri-containerd-" + fixtureContainer2 + ".scope"),
			wantErr: "pod 2c48913c-b29f-11e7-9350-020968147796 lists no container " + fixtureContainer2 + ": it is starting, or the caller is its sandbox"},
		{name: "pod on another node", cg: cgroupLine("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/" + fixtureContainer1),
			wantErr: "the kubelet lists no pod with uid 11111111-2222-3333-4444-555555555555: is the agent on the node the pod runs on?"},
		{name: "pending pod", cg: cgroupLine("/kubepods/pod0f9e8d7c-6b5a-4493-a281-706f5e4d3c2b/" + fixtureDocker),
			wantErr: "lists no container"},
		{name: "no container", cg: readCgroupFixture(t, "systemd-service-v2.txt"), wantErr: `its cgroup is "/system.slice/nginx.service"`},
		{name: "unknown runtime", cg: readCgroupFixture(t, "lxc-v2.txt"), wantErr: "not a containerd, CRI-O, Docker or kubelet cgroup"},
		// A process of the report pod names child cgroups of its own
		// container after the web pod's container: it is not web.
		{name: "another pod's container nested in this one's", cg: cgroupLine("/kubepods/besteffort/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/" + fixtureContainer2 + "/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/" + fixtureContainer1),
			wantErr: "nests container " + fixtureContainer1 + " inside container " + fixtureContainer2 + " of pod a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"},
		{name: "another pod's container nested in this one's, systemd driver", cg: cgroupLine("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda2830d0d_b0f0_4ff0_81b5_0ee4e299cf80.slice/cri-containerd-" + fixtureContainer2 + ".scope/" + podSlice[1:] + "cri-containerd-" + fixtureContainer1 + ".scope"),
			wantErr: "nests container " + fixtureContainer1 + " inside container " + fixtureContainer2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Attest(t.Context(), fakePeer, tt.cg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Attest() = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("Attest() =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
	// One pod list answered them all (the misses may refetch once each,
	// not within kubeletMinRefresh).
	if n := k.requests.Load(); n > 4 {
		t.Errorf("%d requests to the kubelet, want the pod list reused", n)
	}
}

func TestKubernetesCacheAndRefetch(t *testing.T) {
	k := newKubelet(t, false) // the read-only port
	a := k.attestor(t, KubernetesOptions{CacheTTL: time.Hour})
	cg := readCgroupFixture(t, "containerd-systemd-v2.txt")
	for range 5 {
		if _, err := a.Attest(t.Context(), fakePeer, cg); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.requests.Load(); n != 1 {
		t.Fatalf("%d requests for 5 calls within the cache TTL, want 1", n)
	}

	// A container that started after the list was taken: the miss fetches
	// a new list (once the old one is older than minRefresh).
	a.minRefresh = 0
	newer := strings.ReplaceAll(string(mustRead(t, "testdata/kubelet/pods.json")), fixtureSideContainer, fixtureContainer2)
	k.set(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(newer)) })
	got, err := a.Attest(t.Context(), fakePeer, cgroupLine("/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/"+fixtureContainer2))
	if err != nil {
		t.Fatal(err)
	}
	if got[AttrKubernetesContainerName] != "log-shipper" {
		t.Fatalf("container_name = %q, want log-shipper from the refetched list", got[AttrKubernetesContainerName])
	}
	if n := k.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

const fixtureSideContainer = "5d1f0b3c2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8"

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKubernetesBadKubelet(t *testing.T) {
	cg := readCgroupFixture(t, "containerd-systemd-v2.txt")
	tests := []struct {
		name    string
		answer  func(w http.ResponseWriter, r *http.Request)
		opts    KubernetesOptions
		wantErr string
	}{
		{name: "garbage", answer: func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>oops</html>")) },
			wantErr: "answered something that is not a pod list: invalid character '<'"},
		{name: "truncated", answer: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"kind":"PodList","items":[{"metadata":`))
		},
			wantErr: "answered something that is not a pod list: unexpected end of JSON input"},
		{name: "not a pod list", answer: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`))
		}, wantErr: `answered something that is not a pod list: its kind is "Status", not PodList`},
		{name: "wrong types", answer: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"kind":"PodList","items":{"a":1}}`))
		},
			wantErr: "not a pod list: json: cannot unmarshal object"},
		{name: "server error", answer: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
			wantErr: "answered 500 Internal Server Error"},
		{name: "too large", opts: KubernetesOptions{MaxResponseBytes: 1024},
			answer: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(mustRead(t, "testdata/kubelet/pods.json"))
			},
			wantErr: "the kubelet's pod list is larger than 1024 bytes: raise max_response_bytes"},
		{name: "wrong token", opts: KubernetesOptions{TokenFile: writeTemp(t, "stale-token")},
			wantErr: "answered 401 Unauthorized: the agent's service account needs get on nodes/proxy"},
		{name: "missing token file", opts: KubernetesOptions{TokenFile: filepath.Join(t.TempDir(), "none")},
			wantErr: "reading the token for the kubelet"},
		{name: "slow headers", opts: KubernetesOptions{Timeout: 100 * time.Millisecond},
			answer:  func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
			wantErr: "did not answer within 100ms: is it overloaded?"},
		{name: "slow body", opts: KubernetesOptions{Timeout: 500 * time.Millisecond},
			answer: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(`{"kind":"PodList","items":[`))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			wantErr: "did not finish its answer within 500ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKubelet(t, true)
			if tt.answer != nil {
				k.set(tt.answer)
			}
			a := k.attestor(t, tt.opts)
			got, err := a.Attest(t.Context(), fakePeer, cg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Attest() = %v, %v; want error %q", got, err, tt.wantErr)
			}
		})
	}
}

// selfSignedCert is a CA certificate that signed nothing the kubelet has.
func selfSignedCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKubernetesTLS(t *testing.T) {
	k := newKubelet(t, true)
	cg := readCgroupFixture(t, "containerd-systemd-v2.txt")

	// Without the kubelet's CA the certificate is refused.
	other := writeTemp(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSignedCert(t)})))
	a := k.attestor(t, KubernetesOptions{CAFile: other})
	if _, err := a.Attest(t.Context(), fakePeer, cg); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Attest() with the wrong CA = %v, want a certificate error", err)
	}
	// skip_verify accepts it, but still sends the token.
	a, err := NewKubernetes(KubernetesOptions{KubeletURL: k.srv.URL, TokenFile: k.tokFile, InsecureSkipVerify: true, CAFile: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Attest(t.Context(), fakePeer, cg); err != nil || got[AttrKubernetesPodName] != "web-7c9d8f6b5d-x2kqz" {
		t.Fatalf("Attest() with skip_verify = %v, %v", got, err)
	}

	for _, tt := range []struct {
		opts    KubernetesOptions
		wantErr string
	}{
		{KubernetesOptions{KubeletURL: "https://127.0.0.1:10250", CAFile: "/nonexistent/ca.crt"}, "reading the kubelet's CA file: open /nonexistent/ca.crt: no such file or directory: set ca_file, or skip_verify: true"},
		{KubernetesOptions{KubeletURL: "https://127.0.0.1:10250", CAFile: writeTemp(t, "not pem")}, "holds no PEM certificate"},
		{KubernetesOptions{KubeletURL: "127.0.0.1:10255"}, `kubelet_url "127.0.0.1:10255" is not an http:// or https:// URL with a host`},
		{KubernetesOptions{KubeletURL: "ftp://node"}, "is not an http:// or https:// URL"},
		{KubernetesOptions{Timeout: -time.Second}, "must not be negative"},
	} {
		if _, err := NewKubernetes(tt.opts); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NewKubernetes(%+v) = %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
}

// A kubelet that hangs costs each caller at most the per-call timeout,
// shares one request between callers, and a caller that gives up does not
// cancel it for the others.
func TestKubernetesSlowKubeletSharedRequest(t *testing.T) {
	k := newKubelet(t, true)
	release := make(chan struct{})
	pods := mustRead(t, "testdata/kubelet/pods.json")
	k.set(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(pods)
	})
	a := k.attestor(t, KubernetesOptions{Timeout: time.Minute})
	cg := readCgroupFixture(t, "containerd-systemd-v2.txt")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.Attest(ctx, fakePeer, cg); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for the kubelet") {
		t.Fatalf("Attest() with a hanging kubelet = %v, want the caller's deadline", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = a.Attest(t.Context(), fakePeer, cg)
		})
	}
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := k.requests.Load(); n != 1 {
		t.Fatalf("%d requests to the kubelet, want the first one shared", n)
	}
}

func TestAddLabels(t *testing.T) {
	attrs := map[string]string{}
	skipped := addLabels(attrs, "workload.x.labels", map[string]string{
		"app":                    "web",
		"app.kubernetes.io/name": "web",
		"Team":                   "a",
		"team":                   "b",
		"has space":              "c",
		"com.example/":           "d",
	})
	want := map[string]string{"workload.x.labels.app": "web", "workload.x.labels.app.kubernetes.io.name": "web"}
	if !maps.Equal(attrs, want) {
		t.Fatalf("attrs = %v, want %v", attrs, want)
	}
	if strings.Join(skipped, ",") != "Team,com.example/,has space,team" {
		t.Fatalf("skipped = %q", skipped)
	}
}

// FuzzPodList: whatever a kubelet answers, the pod list parser and the
// container lookup either refuse it or return attributes of the pod whose
// uid and container the cgroup named.
func FuzzPodList(f *testing.F) {
	f.Add(mustReadF(f, "testdata/kubelet/pods.json"))
	f.Add([]byte(`{"kind":"PodList","items":[{"metadata":{"uid":"2c48913c-b29f-11e7-9350-020968147796","labels":{"A/b":"1"}},"status":{"containerStatuses":[{"containerID":"x://` + fixtureContainer1 + `"}]}}]}`))
	ref := ContainerRef{ID: fixtureContainer1, PodUID: "2c48913c-b29f-11e7-9350-020968147796"}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parsePodList(b)
		if err != nil {
			return
		}
		attrs, err := l.find(ref)
		if err != nil {
			return
		}
		if attrs[AttrKubernetesPodUID] != ref.PodUID {
			t.Fatalf("attributes of pod %q for pod %s", attrs[AttrKubernetesPodUID], ref.PodUID)
		}
		for k, v := range attrs {
			if v == "" && !strings.HasPrefix(k, AttrKubernetesLabels+".") {
				t.Fatalf("empty %s", k)
			}
		}
	})
}

func mustReadF(f *testing.F, name string) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func TestKubernetesNodeName(t *testing.T) {
	for _, tt := range []struct {
		opts    KubernetesOptions
		wantURL string
		wantErr string
	}{
		{opts: KubernetesOptions{NodeName: "node-1", InsecureSkipVerify: true}, wantURL: "https://node-1:10250/pods"},
		{opts: KubernetesOptions{NodeName: "ip-10-0-0-7.eu-west-1.compute.internal", InsecureSkipVerify: true}, wantURL: "https://ip-10-0-0-7.eu-west-1.compute.internal:10250/pods"},
		// An explicit kubelet_url wins over the node name.
		{opts: KubernetesOptions{NodeName: "node-1", KubeletURL: "http://127.0.0.1:10255"}, wantURL: "http://127.0.0.1:10255/pods"},
		{opts: KubernetesOptions{}, wantURL: DefaultKubeletURL + "/pods"},
		{opts: KubernetesOptions{NodeName: "evil@attacker.example:80/x", InsecureSkipVerify: true}, wantErr: `node name "evil@attacker.example:80/x" (WID_NODE_NAME or node_name) is not a Kubernetes node name`},
		{opts: KubernetesOptions{NodeName: "Node_1", InsecureSkipVerify: true}, wantErr: "is not a Kubernetes node name"},
	} {
		k, err := NewKubernetes(tt.opts)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewKubernetes(%+v) = %v, want %q", tt.opts, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("NewKubernetes(%+v): %v", tt.opts, err)
		}
		if k.url != tt.wantURL {
			t.Errorf("NewKubernetes(%+v) asks %s, want %s", tt.opts, k.url, tt.wantURL)
		}
	}
}
