package attest

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// privateBus starts a dbus-daemon of its own for the test and returns its
// address; the test is skipped where there is no dbus-daemon.
func privateBus(t *testing.T) string {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Skip("no dbus-daemon on this host")
	}
	dir, err := os.MkdirTemp("", "bus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path=`+filepath.Join(dir, "bus")+`</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon, "--config-file="+conf, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading dbus-daemon's address: %v", err)
	}
	return strings.TrimSpace(addr)
}

// fakeSystemd answers as org.freedesktop.systemd1 on a bus: GetUnitByPID
// from a table, and each unit's Id and Slice properties.
type fakeSystemd struct {
	conn *dbus.Conn
	mu   sync.Mutex
	pids map[uint32]dbus.ObjectPath
}

func (f *fakeSystemd) GetUnitByPID(pid uint32) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pids[pid]
	if !ok {
		return "", dbus.NewError("org.freedesktop.systemd1.NoUnitForPID", []any{fmt.Sprintf("PID %d does not belong to any loaded unit.", pid)})
	}
	return p, nil
}

func startFakeSystemd(t *testing.T, addr string) *fakeSystemd {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSystemd{conn: conn, pids: map[uint32]dbus.ObjectPath{}}
	if err := conn.Export(f, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning org.freedesktop.systemd1: %v, %v", reply, err)
	}
	return f
}

// addUnit exports a unit object (named with systemd's path escaping) and
// maps pid to it.
func (f *fakeSystemd) addUnit(t *testing.T, pid uint32, id, iface, slice string) {
	t.Helper()
	var esc strings.Builder
	for _, c := range []byte(id) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			esc.WriteByte(c)
		} else {
			fmt.Fprintf(&esc, "_%02x", c)
		}
	}
	// One object per pid, so that a test can give one unit two answers.
	path := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/unit/%s/%d", esc.String(), pid))
	if _, err := prop.Export(f.conn, path, prop.Map{
		"org.freedesktop.systemd1.Unit": {"Id": {Value: id}},
		iface:                           {"Slice": {Value: slice}},
	}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.pids[pid] = path
	f.mu.Unlock()
}

func TestSystemdAttest(t *testing.T) {
	addr := privateBus(t)
	sd := startFakeSystemd(t, addr)
	a := NewSystemd(SystemdOptions{BusAddress: addr})
	t.Cleanup(func() { a.Close() })

	sd.addUnit(t, 100, "nginx.service", "org.freedesktop.systemd1.Service", "system.slice")
	sd.addUnit(t, 101, "user@1000.service", "org.freedesktop.systemd1.Service", "user-1000.slice")
	sd.addUnit(t, 102, "session-3.scope", "org.freedesktop.systemd1.Scope", "user-1000.slice")
	sd.addUnit(t, 103, "sshd.service", "org.freedesktop.systemd1.Service", "system.slice")
	sd.addUnit(t, 104, "nginx.service", "org.freedesktop.systemd1.Service", "web.slice")

	tests := []struct {
		name    string
		pid     int32
		file    string
		want    map[string]string
		wantErr string
	}{
		{name: "service", pid: 100, file: "systemd-service-v2.txt",
			want: map[string]string{AttrSystemdUnit: "nginx.service", AttrSystemdSlice: "system.slice"}},
		{name: "user service", pid: 101, file: "systemd-user-service-v2.txt",
			want: map[string]string{AttrSystemdUnit: "user@1000.service", AttrSystemdSlice: "user-1000.slice",
				AttrSystemdUserUnit: "app-backup.service", AttrSystemdUserSlice: "app.slice"}},
		{name: "session on v1", pid: 102, file: "systemd-session-v1.txt",
			want: map[string]string{AttrSystemdUnit: "session-3.scope", AttrSystemdSlice: "user-1000.slice"}},
		{name: "pid now in another unit", pid: 103, file: "systemd-service-v2.txt",
			wantErr: "systemd says process 103 is in unit sshd.service, its cgroup says nginx.service: refusing to choose"},
		{name: "slices disagree", pid: 104, file: "systemd-service-v2.txt",
			wantErr: "systemd puts unit nginx.service in slice web.slice, the caller's cgroup in system.slice"},
		{name: "unknown pid", pid: 999, file: "systemd-service-v2.txt",
			wantErr: "asking systemd for the unit of process 999: PID 999 does not belong to any loaded unit. (org.freedesktop.systemd1.NoUnitForPID)"},
		{name: "in no unit", pid: 100, file: "lxc-v2.txt", wantErr: "is in no systemd unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Attest(t.Context(), Peer{PID: tt.pid}, readCgroupFixture(t, tt.file))
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
				t.Fatalf("Attest() = %v, want %v", got, tt.want)
			}
		})
	}

	// Without D-Bus, the cgroup alone: pid 103's disagreement goes unseen.
	cgOnly := NewSystemd(SystemdOptions{CgroupOnly: true, BusAddress: "unix:path=/nonexistent"})
	got, err := cgOnly.Attest(t.Context(), Peer{PID: 103}, readCgroupFixture(t, "systemd-service-v2.txt"))
	if err != nil || got[AttrSystemdUnit] != "nginx.service" {
		t.Fatalf("cgroup-only Attest() = %v, %v", got, err)
	}
}

func TestSystemdNoBus(t *testing.T) {
	a := NewSystemd(SystemdOptions{BusAddress: "unix:path=" + filepath.Join(t.TempDir(), "none")})
	_, err := a.Attest(t.Context(), Peer{PID: 1}, readCgroupFixture(t, "systemd-service-v2.txt"))
	if err == nil || !strings.Contains(err.Error(), "set the systemd attestor's dbus_address, or cgroup_only: true") {
		t.Fatalf("Attest() without a bus = %v", err)
	}
}

// The bus restarting (dbus-daemon upgraded) costs one call at most: the
// next one connects again.
func TestSystemdReconnects(t *testing.T) {
	addr := privateBus(t)
	sd := startFakeSystemd(t, addr)
	sd.addUnit(t, 100, "nginx.service", "org.freedesktop.systemd1.Service", "system.slice")
	a := NewSystemd(SystemdOptions{BusAddress: addr})
	t.Cleanup(func() { a.Close() })
	cg := readCgroupFixture(t, "systemd-service-v2.txt")
	if _, err := a.Attest(t.Context(), Peer{PID: 100}, cg); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.conn.Close() // as if the bus dropped us
	a.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := a.Attest(t.Context(), Peer{PID: 100}, cg)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Attest() after the connection dropped: %v", err)
		}
	}
}

// Where systemd runs this host, the test process's own cgroup names a unit
// and systemd agrees over the system bus.
func TestSystemdRealCgroup(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		t.Skip("systemd is not the init system here")
	}
	cg, err := readCgroups(DefaultProcRoot, selfPeer(t))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cg.SystemdUnit()
	if err != nil {
		t.Fatal(err)
	}
	a := NewSystemd(SystemdOptions{})
	t.Cleanup(func() { a.Close() })
	got, err := a.Attest(t.Context(), selfPeer(t), cg)
	if err != nil {
		if strings.Contains(err.Error(), "connecting to D-Bus") {
			t.Skipf("no system bus: %v", err)
		}
		t.Fatal(err)
	}
	if got[AttrSystemdUnit] != u.Unit || got[AttrSystemdSlice] == "" {
		t.Fatalf("Attest() = %v, cgroup says %+v", got, u)
	}
}

// systemd's answer is reused for the same process instance, not for a
// later process given the same pid.
func TestSystemdRemembers(t *testing.T) {
	addr := privateBus(t)
	sd := startFakeSystemd(t, addr)
	sd.addUnit(t, 100, "nginx.service", "org.freedesktop.systemd1.Service", "system.slice")
	a := NewSystemd(SystemdOptions{BusAddress: addr})
	t.Cleanup(func() { a.Close() })
	cg := readCgroupFixture(t, "systemd-service-v2.txt")
	if _, err := a.Attest(t.Context(), Peer{PID: 100, StartTime: 7}, cg); err != nil {
		t.Fatal(err)
	}
	sd.mu.Lock()
	delete(sd.pids, 100) // systemd would now say: no unit
	sd.mu.Unlock()
	if got, err := a.Attest(t.Context(), Peer{PID: 100, StartTime: 7}, cg); err != nil || got[AttrSystemdUnit] != "nginx.service" {
		t.Fatalf("Attest() of the same process = %v, %v; want the remembered answer", got, err)
	}
	if _, err := a.Attest(t.Context(), Peer{PID: 100, StartTime: 8}, cg); err == nil || !strings.Contains(err.Error(), "does not belong to any loaded unit") {
		t.Fatalf("Attest() of a later process with the same pid = %v, want systemd asked again", err)
	}
}
