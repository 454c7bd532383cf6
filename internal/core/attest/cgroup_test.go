package attest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	fixtureContainer1 = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	fixtureContainer2 = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	fixtureKindNode   = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	fixtureDocker     = "4f1c2b8e7a0d3c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e"
)

func readCgroupFixture(t testing.TB, name string) Cgroups {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "cgroup", name))
	if err != nil {
		t.Fatal(err)
	}
	cg, err := ParseCgroups(b)
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return cg
}

func TestCgroupContainer(t *testing.T) {
	tests := []struct {
		file    string
		want    ContainerRef
		wantErr string
	}{
		{file: "containerd-systemd-v2.txt", want: ContainerRef{ID: fixtureContainer1, Runtime: RuntimeContainerd, PodUID: "2c48913c-b29f-11e7-9350-020968147796"}},
		{file: "containerd-cgroupfs-v1.txt", want: ContainerRef{ID: fixtureContainer1, Runtime: RuntimeUnknown, PodUID: "2c48913c-b29f-11e7-9350-020968147796"}},
		{file: "crio-systemd-hybrid.txt", want: ContainerRef{ID: fixtureContainer2, Runtime: RuntimeCRIO, PodUID: "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"}},
		{file: "crio-cgroupns-v2.txt", want: ContainerRef{ID: fixtureContainer2, Runtime: RuntimeCRIO}},
		{file: "static-pod-v2.txt", want: ContainerRef{ID: fixtureContainer1, Runtime: RuntimeContainerd, PodUID: "7d4e0c9e3f3a4a6b8c2d1e0f9a8b7c6d"}},
		{file: "kind-v1.txt", want: ContainerRef{ID: fixtureContainer2, Runtime: RuntimeUnknown, PodUID: "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"}},
		{file: "docker-systemd-v2.txt", want: ContainerRef{ID: fixtureDocker, Runtime: RuntimeDocker}},
		{file: "docker-cgroupfs-v1.txt", want: ContainerRef{ID: fixtureDocker, Runtime: RuntimeDocker}},
		{file: "dockershim-v2.txt", want: ContainerRef{ID: fixtureDocker, Runtime: RuntimeDocker, PodUID: "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"}},
		{file: "systemd-service-v2.txt", wantErr: `its cgroup is "/system.slice/nginx.service", not a containerd, CRI-O, Docker or kubelet cgroup`},
		{file: "lxc-v2.txt", wantErr: `its cgroup is "/lxc.payload.web/system.slice/nginx.service"`},
		{file: "crio-conmon-v2.txt", wantErr: "not a containerd, CRI-O, Docker or kubelet cgroup"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := readCgroupFixture(t, tt.file).Container()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNoContainer) {
					t.Fatalf("Container() = %+v, %v; want ErrNoContainer saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Container() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCgroupContainerConflict(t *testing.T) {
	cg, err := ParseCgroups([]byte("1:name=systemd:/docker/" + fixtureDocker + "\n0::/system.slice/docker-" + fixtureContainer1 + ".scope\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cg.Container(); err == nil || !strings.Contains(err.Error(), "name two containers") {
		t.Fatalf("Container() = %v, want a refusal to choose", err)
	}
	if _, err := cg.DockerContainer(); err == nil || !strings.Contains(err.Error(), "two Docker containers") {
		t.Fatalf("DockerContainer() = %v, want a refusal to choose", err)
	}
	cg, _ = ParseCgroups([]byte("1:name=systemd:/kubepods/pod2c48913c-b29f-11e7-9350-020968147796/" + fixtureContainer1 + "\n2:cpu:/kubepods/poda2830d0d-b0f0-4ff0-81b5-0ee4e299cf80/" + fixtureContainer1 + "\n"))
	if _, err := cg.Container(); err == nil || !strings.Contains(err.Error(), "name two pods") {
		t.Fatalf("Container() = %v, want a refusal to choose between pods", err)
	}
}

// A process that may create cgroups inside its own container can name them
// after any container or pod: one container nested in another is refused,
// but for kind's shape (a pod's container inside a node container that is
// in no pod).
func TestCgroupNestedContainers(t *testing.T) {
	const (
		podA = "2c48913c-b29f-11e7-9350-020968147796"
		podB = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	)
	c1, c2, d, node := fixtureContainer1, fixtureContainer2, fixtureDocker, fixtureKindNode
	tests := []struct {
		name, path string
		want       ContainerRef // Container(), when allowed
		wantDocker string       // DockerContainer(), when allowed
		wantErr    string       // both refuse, saying this
	}{
		{name: "pod container", path: "/kubepods/besteffort/pod" + podA + "/" + c1, want: ContainerRef{ID: c1, PodUID: podA}},
		{name: "kind", path: "/docker/" + node + "/kubepods/besteffort/pod" + podB + "/" + c2, want: ContainerRef{ID: c2, PodUID: podB}, wantDocker: node},
		{name: "pod container in a pod container", path: "/kubepods/besteffort/pod" + podB + "/" + c2 + "/kubepods/besteffort/pod" + podA + "/" + c1,
			wantErr: "nests container " + c1 + " inside container " + c2 + " of pod " + podB},
		{name: "bare container in a pod container", path: "/kubepods/pod" + podB + "/" + c2 + "/" + c1,
			wantErr: "nests container " + c1 + " inside container " + c2 + " of pod " + podB},
		{name: "docker container in a pod container", path: "/kubepods/pod" + podB + "/" + c2 + "/docker/" + d,
			wantErr: "nests container " + d + " inside container " + c2 + " of pod " + podB},
		{name: "systemd driver", path: "/kubepods.slice/kubepods-pod" + strings.ReplaceAll(podB, "-", "_") + ".slice/cri-containerd-" + c2 + ".scope/kubepods-pod" + strings.ReplaceAll(podA, "-", "_") + ".slice/cri-containerd-" + c1 + ".scope",
			wantErr: "nests container " + c1 + " inside container " + c2 + " of pod " + podB},
		{name: "docker in docker", path: "/docker/" + d + "/docker/" + c1,
			wantErr: "nests container " + c1 + " inside container " + d + ":"},
		{name: "docker scope in docker", path: "/system.slice/docker-" + d + ".scope/docker-" + c1 + ".scope",
			wantErr: "nests container " + c1 + " inside container " + d + ":"},
		{name: "pod in kind in a pod", path: "/docker/" + node + "/kubepods/pod" + podB + "/" + c2 + "/kubepods/pod" + podA + "/" + c1,
			wantErr: "nests container " + c1 + " inside container " + c2 + " of pod " + podB},
		{name: "kind in docker", path: "/docker/" + d + "/docker/" + node + "/kubepods/pod" + podA + "/" + c1,
			wantErr: "nests container " + c1 + " inside container " + node},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg, err := ParseCgroups([]byte("0::" + tt.path + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			ref, err := cg.Container()
			id, derr := cg.DockerContainer()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Container() = %+v, %v; want a refusal saying %q", ref, err, tt.wantErr)
				}
				if derr == nil || !strings.Contains(derr.Error(), tt.wantErr) {
					t.Errorf("DockerContainer() = %q, %v; want a refusal saying %q", id, derr, tt.wantErr)
				}
				return
			}
			if err != nil || ref.ID != tt.want.ID || ref.PodUID != tt.want.PodUID {
				t.Errorf("Container() = %+v, %v; want %+v", ref, err, tt.want)
			}
			if tt.wantDocker != "" && (derr != nil || id != tt.wantDocker) {
				t.Errorf("DockerContainer() = %q, %v; want %q", id, derr, tt.wantDocker)
			}
		})
	}
}

// A user may name cgroups in their own slice as they like: a container
// name there is no container.
func TestCgroupContainerInUserSlice(t *testing.T) {
	spoof := "0::/user.slice/user-1000.slice/user@1000.service/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + fixtureContainer1 + ".scope\n"
	cg, err := ParseCgroups([]byte(spoof))
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := cg.Container(); !errors.Is(err, ErrNoContainer) || !strings.Contains(err.Error(), "is in a user's slice, whose cgroups users name themselves") {
		t.Fatalf("Container() = %+v, %v; want a refusal", ref, err)
	}
	cg, _ = ParseCgroups([]byte("0::/user.slice/user-1000.slice/user@1000.service/docker-" + fixtureDocker + ".scope\n"))
	if id, err := cg.DockerContainer(); !errors.Is(err, ErrNoContainer) {
		t.Fatalf("DockerContainer() = %q, %v; want a refusal", id, err)
	}
	// Its unit is still the user's: systemd's delegation is what it is.
	if u, err := cg.SystemdUnit(); err != nil || u.Unit != "user@1000.service" || u.UserUnit != "docker-"+fixtureDocker+".scope" {
		t.Fatalf("SystemdUnit() = %+v, %v", u, err)
	}
}

func TestCgroupDockerContainer(t *testing.T) {
	tests := []struct {
		file, want, wantErr string
	}{
		{file: "docker-systemd-v2.txt", want: fixtureDocker},
		{file: "docker-cgroupfs-v1.txt", want: fixtureDocker},
		{file: "dockershim-v2.txt", want: fixtureDocker},
		// The Docker container of a kind pod's process is the node's.
		{file: "kind-v1.txt", want: fixtureKindNode},
		{file: "containerd-systemd-v2.txt", wantErr: "not a Docker container's"},
		{file: "systemd-service-v2.txt", wantErr: `its cgroup is "/system.slice/nginx.service"`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := readCgroupFixture(t, tt.file).DockerContainer()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNoContainer) {
					t.Fatalf("DockerContainer() = %q, %v; want ErrNoContainer saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DockerContainer() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCgroupSystemdUnit(t *testing.T) {
	tests := []struct {
		file    string
		want    SystemdUnit
		wantErr string
	}{
		{file: "systemd-service-v2.txt", want: SystemdUnit{Unit: "nginx.service", Slice: "system.slice"}},
		{file: "systemd-user-service-v2.txt", want: SystemdUnit{Unit: "user@1000.service", Slice: "user-1000.slice", UserUnit: "app-backup.service", UserSlice: "app.slice"}},
		{file: "systemd-session-v1.txt", want: SystemdUnit{Unit: "session-3.scope", Slice: "user-1000.slice"}},
		{file: "systemd-delegated-v2.txt", want: SystemdUnit{Unit: "buildkit.service", Slice: "system.slice"}},
		{file: "docker-systemd-v2.txt", want: SystemdUnit{Unit: "docker-" + fixtureDocker + ".scope", Slice: "system.slice"}},
		{file: "crio-systemd-hybrid.txt", want: SystemdUnit{Unit: "crio-" + fixtureContainer2 + ".scope", Slice: "kubepods-besteffort-poda2830d0d_b0f0_4ff0_81b5_0ee4e299cf80.slice"}},
		{file: "containerd-systemd-v2.txt", want: SystemdUnit{Unit: "cri-containerd-" + fixtureContainer1 + ".scope", Slice: "kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice"}},
		{file: "lxc-v2.txt", wantErr: `the caller's cgroup "/lxc.payload.web/system.slice/nginx.service" is in no systemd unit`},
		{file: "docker-cgroupfs-v1.txt", wantErr: "is in no systemd unit"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := readCgroupFixture(t, tt.file).SystemdUnit()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SystemdUnit() = %+v, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("SystemdUnit() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	cg, _ := ParseCgroups([]byte("4:memory:/\n"))
	if _, err := cg.SystemdUnit(); err == nil || !strings.Contains(err.Error(), "no systemd cgroup") {
		t.Fatalf("SystemdUnit() without a systemd hierarchy = %v", err)
	}
	cg, _ = ParseCgroups([]byte("0::/\n"))
	if _, err := cg.SystemdUnit(); err == nil || !strings.Contains(err.Error(), `cgroup "/" is in no systemd unit`) {
		t.Fatalf("SystemdUnit() at the root = %v", err)
	}
}

func TestParseCgroups(t *testing.T) {
	tests := []struct {
		name, in string
		want     Cgroups
		wantErr  string
	}{
		{name: "v2", in: "0::/system.slice/a.service\n", want: Cgroups{{0, "", "/system.slice/a.service"}}},
		{name: "v1 with colon in path", in: "3:cpu,cpuacct:/a:b\n", want: Cgroups{{3, "cpu,cpuacct", "/a:b"}}},
		{name: "no trailing newline and blank line", in: "1:name=systemd:/x\n\n0::/y", want: Cgroups{{1, "name=systemd", "/x"}, {0, "", "/y"}}},
		{name: "empty", in: "", wantErr: "no cgroup lines"},
		{name: "one colon", in: "0:/x\n", wantErr: `line 1 "0:/x" is not hierarchy:controllers:path`},
		{name: "bad hierarchy", in: "a::/x\n", wantErr: `line 1: hierarchy "a" is not a number`},
		{name: "negative hierarchy", in: "-1::/x\n", wantErr: `hierarchy "-1" is not a number`},
		{name: "relative path", in: "0::x\n", wantErr: `line 1: cgroup path "x" does not start with '/'`},
		{name: "too many", in: strings.Repeat("0::/\n", maxCgroupLines+1), wantErr: "more than 256 cgroup lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCgroups([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCgroups() = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseCgroups() = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("ParseCgroups()[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// FuzzParseCgroups: any input either fails to parse or gives lines whose
// paths are absolute, and the container and unit finders never panic and
// only return well-formed ids.
func FuzzParseCgroups(f *testing.F) {
	entries, _ := os.ReadDir(filepath.Join("testdata", "cgroup"))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("testdata", "cgroup", e.Name()))
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("0::/kubepods-pod.slice/cri-containerd-.scope"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cg, err := ParseCgroups(b)
		if err != nil {
			return
		}
		if len(cg) == 0 || len(cg) > maxCgroupLines {
			t.Fatalf("%d lines parsed", len(cg))
		}
		for _, e := range cg {
			if !strings.HasPrefix(e.Path, "/") || strings.Contains(e.Path, "\n") {
				t.Fatalf("bad path %q", e.Path)
			}
		}
		if ref, err := cg.Container(); err == nil {
			if !isContainerID(ref.ID) || ref.PodUID != "" && !isPodUID(ref.PodUID) {
				t.Fatalf("Container() = %+v", ref)
			}
		}
		if id, err := cg.DockerContainer(); err == nil && !isContainerID(id) {
			t.Fatalf("DockerContainer() = %q", id)
		}
		if u, err := cg.SystemdUnit(); err == nil {
			if !isUnitName(u.Unit) || !isUnitName(u.Slice) || strings.Contains(u.Unit, "/") {
				t.Fatalf("SystemdUnit() = %+v", u)
			}
		}
	})
}
