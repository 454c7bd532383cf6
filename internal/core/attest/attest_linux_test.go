package attest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// handshakeStartTime is the start time the handshake would record for pid.
func handshakeStartTime(pid int32) (uint64, error) {
	info, err := handshakeProcess(pid)
	return info.start, err
}

func selfPeer(t testing.TB) Peer {
	t.Helper()
	start, err := handshakeStartTime(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	return Peer{PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), StartTime: start}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// wantGone checks that err wraps ErrProcessGone and says exactly msg.
func wantGone(t *testing.T, err error, msg string) {
	t.Helper()
	if !errors.Is(err, ErrProcessGone) {
		t.Fatalf("error = %v, want one wrapping ErrProcessGone", err)
	}
	if err.Error() != msg {
		t.Fatalf("error = %q, want %q", err, msg)
	}
}

func TestAttestSelf(t *testing.T) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(t)
	res, err := u.Attest(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}

	exe := testExecutable(t)
	want := map[string]string{
		AttrUnixAttested: "true",
		AttrPID:          strconv.Itoa(os.Getpid()),
		AttrUID:          strconv.Itoa(os.Geteuid()),
		AttrGID:          strconv.Itoa(os.Getegid()),
		AttrPath:         exe,
		AttrSHA256:       fileSHA256(t, exe),
	}
	if usr, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
		want[AttrUser] = usr.Username
	}
	if grp, err := user.LookupGroupId(strconv.Itoa(os.Getegid())); err == nil {
		want[AttrGroup] = grp.Name
	}
	gids, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(gids)
	gids = slices.Compact(gids)
	var parts []string
	for _, g := range gids {
		parts = append(parts, strconv.Itoa(g))
	}
	if len(parts) > 0 {
		want[AttrSupplementaryGIDs] = strings.Join(parts, ",")
	}
	if !maps.Equal(res.Attributes, want) {
		t.Fatalf("attributes:\n got %v\nwant %v", res.Attributes, want)
	}
	prefix := fmt.Sprintf("%d:%d:", p.PID, p.StartTime)
	if !strings.HasPrefix(res.Key, prefix) {
		t.Fatalf("Key = %q, want it to start with %q", res.Key, prefix)
	}

	// Cached now: same answer, same key.
	again, err := u.Attest(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if again.Key != res.Key || !maps.Equal(again.Attributes, res.Attributes) {
		t.Fatalf("second attestation = %+v, first %+v", again, res)
	}
	// Without a start time from the handshake (non-linux peers) it still works.
	p.StartTime = 0
	if _, err := u.Attest(t.Context(), p); err != nil {
		t.Fatalf("attesting without start time: %v", err)
	}
}

func TestAttestSelfWrongCredentials(t *testing.T) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(t)

	reused := p
	reused.StartTime++
	_, err := u.Attest(t.Context(), reused)
	wantGone(t, err, fmt.Sprintf("pid %d now belongs to another process: it started at clock tick %d, the caller at %d", p.PID, p.StartTime, p.StartTime+1))

	otherUID := p
	otherUID.UID++
	_, err = u.Attest(t.Context(), otherUID)
	wantGone(t, err, fmt.Sprintf("process %d now runs as uid %d, not as uid %d it connected with", p.PID, p.UID, p.UID+1))

	otherGID := p
	otherGID.GID++
	_, err = u.Attest(t.Context(), otherGID)
	wantGone(t, err, fmt.Sprintf("process %d now runs as gid %d, not as gid %d it connected with", p.PID, p.GID, p.GID+1))

	_, err = u.Attest(t.Context(), Peer{PID: 0})
	if err == nil || err.Error() != "attesting pid 0: the kernel reported no pid for the caller" || errors.Is(err, ErrProcessGone) {
		t.Fatalf("attesting pid 0: %v", err)
	}
}

// An agent not running as root may not look at other users' executables:
// it still attests them, without path and sha256.
func TestAttestOtherUsersProcess(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may inspect every process; run the tests as another user to cover this")
	}
	b, err := os.ReadFile("/proc/1/status")
	if err != nil {
		t.Skipf("no /proc/1: %v", err)
	}
	st, err := parseStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.euid == uint32(os.Geteuid()) {
		t.Skip("pid 1 runs as this test's uid")
	}
	start, err := handshakeStartTime(1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := NewUnix(UnixOptions{}).Attest(t.Context(), Peer{PID: 1, UID: st.euid, GID: st.egid, StartTime: start})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Attributes[AttrPath]; ok {
		t.Fatalf("path of another user's process: %v", res.Attributes)
	}
	if res.Attributes[AttrPID] != "1" || res.Attributes[AttrUID] != strconv.Itoa(int(st.euid)) {
		t.Fatalf("attributes of pid 1 = %v", res.Attributes)
	}
}

// A child that called over the socket and exited, reaped or not, gets nothing.
func TestAttestExitedChild(t *testing.T) {
	u := NewUnix(UnixOptions{})
	sock, who := startWho(t, u)

	t.Run("reaped", func(t *testing.T) {
		c := startChild(t, "call", sock)
		reply := c.reply(t)
		if reply.AttestError != "" || reply.Attributes[AttrPID] != strconv.Itoa(c.cmd.Process.Pid) {
			t.Fatalf("attesting the live child: %+v", reply)
		}
		p := <-who.peers
		c.exit(t)
		_, err := u.Attest(t.Context(), p)
		wantGone(t, err, fmt.Sprintf("process %d exited before attestation", p.PID))
	})

	t.Run("zombie", func(t *testing.T) {
		c := startChild(t, "call-wait", sock)
		reply := c.reply(t)
		p := <-who.peers
		if reply.AttestError != "" {
			t.Fatalf("attesting the live child: %s", reply.AttestError)
		}
		if _, err := u.Attest(t.Context(), p); err != nil {
			t.Fatalf("attesting the live child again: %v", err)
		}
		c.stdin.Close()
		// Wait for the exit without reaping: the child stays a zombie
		// whose /proc/<pid>/stat is still readable.
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, int(p.PID), &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", p.PID)); err != nil {
			t.Fatalf("zombie's stat: %v", err)
		}
		_, err := u.Attest(t.Context(), p)
		wantGone(t, err, fmt.Sprintf("process %d exited before attestation", p.PID))
		c.exit(t)
		_, err = u.Attest(t.Context(), p)
		wantGone(t, err, fmt.Sprintf("process %d exited before attestation", p.PID))
	})
}

// A process that exits while it is being attested gets nothing.
func TestAttestExitDuringAttestation(t *testing.T) {
	for _, reap := range []bool{true, false} {
		t.Run("reap="+strconv.FormatBool(reap), func(t *testing.T) {
			c := startChild(t, "wait", "")
			if got := c.readLine(t); got != "ready\n" {
				t.Fatalf("child said %q", got)
			}
			pid := c.cmd.Process.Pid
			start, err := handshakeStartTime(int32(pid))
			if err != nil {
				t.Fatal(err)
			}
			u := NewUnix(UnixOptions{})
			u.midway = func() {
				if err := c.cmd.Process.Kill(); err != nil {
					t.Error(err)
				}
				if reap {
					_ = c.cmd.Wait()
					return
				}
				var info unix.Siginfo
				if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
					t.Error(err)
				}
			}
			res, err := u.Attest(t.Context(), Peer{PID: int32(pid), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), StartTime: start})
			wantGone(t, err, fmt.Sprintf("process %d exited during attestation", pid))
			if res.Attributes != nil || res.Key != "" {
				t.Fatalf("result of a failed attestation = %+v", res)
			}
		})
	}
}

// A binary replaced on disk is never described by the hash of its old content.
func TestAttestReplacedBinary(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	orig, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep to copy: %v", err)
	}
	if err := os.WriteFile(prog, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	u := NewUnix(UnixOptions{})
	run := func() Peer {
		t.Helper()
		cmd := exec.Command(prog, "60")
		if err := cmd.Start(); err != nil {
			t.Skipf("cannot run a binary from %s (noexec?): %v", dir, err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		start, err := handshakeStartTime(int32(cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return Peer{PID: int32(cmd.Process.Pid), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), StartTime: start}
	}
	attest := func(p Peer) map[string]string {
		t.Helper()
		res, err := u.Attest(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		return res.Attributes
	}

	oldSum := fileSHA256(t, prog)
	first := run()
	if got := attest(first); got[AttrPath] != prog || got[AttrSHA256] != oldSum {
		t.Fatalf("before the replacement: path %q sha256 %q, want %q %q", got[AttrPath], got[AttrSHA256], prog, oldSum)
	}

	// Replace it the way package managers do: a new file renamed over it.
	// Still a valid ELF with trailing bytes, but other content.
	newContent := append(slices.Clone(orig), []byte("wid attest test")...)
	if err := os.WriteFile(prog+".new", newContent, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(prog+".new", prog); err != nil {
		t.Fatal(err)
	}
	newSum := fileSHA256(t, prog)
	if newSum == oldSum {
		t.Fatal("test setup: replacement has the same content")
	}

	// The old process runs a deleted binary: no path, no sha256, rest intact.
	got := attest(first)
	if _, ok := got[AttrPath]; ok {
		t.Fatalf("process running a replaced binary has path %q", got[AttrPath])
	}
	if _, ok := got[AttrSHA256]; ok {
		t.Fatalf("process running a replaced binary has sha256 %q", got[AttrSHA256])
	}
	if got[AttrPID] != strconv.Itoa(int(first.PID)) || got[AttrUID] != strconv.Itoa(os.Geteuid()) {
		t.Fatalf("attributes of the old process = %v", got)
	}

	// A new process from the same path gets the new content's hash.
	second := run()
	if got := attest(second); got[AttrPath] != prog || got[AttrSHA256] != newSum {
		t.Fatalf("after the replacement: path %q sha256 %q, want %q %q (old %q)", got[AttrPath], got[AttrSHA256], prog, newSum, oldSum)
	}

	// Writing into a running binary: Linux refuses (ETXTBSY). Should a
	// kernel allow it, the attestation must follow the new content.
	f, err := os.OpenFile(prog, os.O_WRONLY, 0)
	if err == nil {
		if _, err := f.WriteAt([]byte("x"), int64(len(newContent)-1)); err != nil {
			t.Logf("opening a running binary for writing worked, writing did not: %v", err)
		}
		f.Close()
		t.Logf("kernel allowed writing a running binary; checking the hash follows")
		if got := attest(second); got[AttrSHA256] != fileSHA256(t, prog) {
			t.Fatalf("after writing in place: sha256 %q, file has %q", got[AttrSHA256], fileSHA256(t, prog))
		}
	} else if !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("opening a running binary for writing: %v, want ETXTBSY", err)
	}
}

// fakeProc is a /proc tree for one pid, for the cases a live process can't show.
type fakeProc struct {
	root string // ProcRoot
	dir  string // root/<pid>
	bin  string // a file outside the tree for exe to point at
}

const fakePID = 4242

func newFakeProc(t testing.TB, stat, status string) *fakeProc {
	t.Helper()
	root := t.TempDir()
	fp := &fakeProc{root: root, dir: filepath.Join(root, strconv.Itoa(fakePID)), bin: filepath.Join(t.TempDir(), "bin")}
	if err := os.Mkdir(fp.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fp.write(t, "stat", stat)
	fp.write(t, "status", status)
	if err := os.WriteFile(fp.bin, []byte("#!/bin/false\nfake binary\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fp.link(t, fp.bin)
	return fp
}

func (fp *fakeProc) write(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(fp.dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// link points exe at target; "" removes it.
func (fp *fakeProc) link(t testing.TB, target string) {
	t.Helper()
	exe := filepath.Join(fp.dir, "exe")
	if err := os.Remove(exe); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if target != "" {
		if err := os.Symlink(target, exe); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeNames makes user and group names deterministic: 1000 is alice/staff.
func fakeNames(u *Unix) {
	u.users = newNameCache(8, func(id uint32) (string, error) {
		if id == 1000 {
			return "alice", nil
		}
		return "", errUnknownID
	})
	u.groups = newNameCache(8, func(id uint32) (string, error) {
		if id == 1000 {
			return "staff", nil
		}
		return "", errUnknownID
	})
}

func newFakeUnix(fp *fakeProc, opts UnixOptions) *Unix {
	opts.ProcRoot = fp.root
	u := NewUnix(opts)
	fakeNames(u)
	return u
}

var fakePeer = Peer{PID: fakePID, UID: 1000, GID: 1000, StartTime: 100}

func TestAttestFakeProc(t *testing.T) {
	goodStat := statLine(fakePID, "prog", 'S', 100)
	goodStatus := statusText(1000, 1000, 1000, 1000, "27 4 24 ")
	tests := []struct {
		name   string
		stat   string
		status string
		setup  func(t *testing.T, fp *fakeProc)
		opts   UnixOptions
		peer   *Peer
		// want lists the attributes beyond pid, uid, gid, user and group;
		// "bin" in AttrPath and AttrSHA256 stand for the fake binary's.
		want    map[string]string
		wantErr string // <root> stands for ProcRoot
		gone    bool
	}{
		{
			name: "plain", stat: goodStat, status: goodStatus,
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin", AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "comm with ') ' and a fake zombie state", stat: statLine(fakePID, "x) Z 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 99 (y", 'S', 100), status: goodStatus,
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin", AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "missing Groups line", stat: goodStat, status: statusText(1000, 1000, 1000, 1000, "-"),
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin"},
		},
		{
			name: "empty Groups line", stat: goodStat, status: statusText(1000, 1000, 1000, 1000, ""),
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin"},
		},
		{
			name: "deleted binary", stat: goodStat, status: goodStatus,
			setup: func(t *testing.T, fp *fakeProc) {
				deleted := fp.bin + " (deleted)"
				if err := os.Rename(fp.bin, deleted); err != nil {
					t.Fatal(err)
				}
				fp.link(t, deleted)
			},
			want: map[string]string{AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "no exe link", stat: goodStat, status: goodStatus,
			setup: func(t *testing.T, fp *fakeProc) { fp.link(t, "") },
			want:  map[string]string{AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "relative exe link", stat: goodStat, status: goodStatus,
			setup: func(t *testing.T, fp *fakeProc) {
				if err := os.WriteFile(filepath.Join(fp.dir, "rel"), []byte("x"), 0o755); err != nil {
					t.Fatal(err)
				}
				fp.link(t, "rel")
			},
			want: map[string]string{AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "binary over MaxHashBytes", stat: goodStat, status: goodStatus, opts: UnixOptions{MaxHashBytes: 5},
			want: map[string]string{AttrPath: "bin", AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "hashing disabled", stat: goodStat, status: goodStatus, opts: UnixOptions{MaxHashBytes: -1},
			want: map[string]string{AttrPath: "bin", AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "unknown user and group", stat: goodStat, status: statusText(7, 7, 8, 8, ""),
			peer: &Peer{PID: fakePID, UID: 7, GID: 8, StartTime: 100},
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin"},
		},
		{
			name: "setuid binary: effective uid counts", stat: goodStat, status: statusText(5, 1000, 6, 1000, ""),
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin"},
		},
		{
			name: "no start time from the handshake", stat: statLine(fakePID, "prog", 'S', 555), status: goodStatus,
			peer: &Peer{PID: fakePID, UID: 1000, GID: 1000},
			want: map[string]string{AttrPath: "bin", AttrSHA256: "bin", AttrSupplementaryGIDs: "4,24,27"},
		},
		{
			name: "no such pid", stat: goodStat, status: goodStatus,
			setup:   func(t *testing.T, fp *fakeProc) { os.RemoveAll(fp.dir) },
			wantErr: "process 4242 exited before attestation", gone: true,
		},
		{
			name: "zombie", stat: statLine(fakePID, "prog", 'Z', 100), status: goodStatus,
			wantErr: "process 4242 exited before attestation", gone: true,
		},
		{
			name: "dead", stat: statLine(fakePID, "prog", 'X', 100), status: goodStatus,
			wantErr: "process 4242 exited before attestation", gone: true,
		},
		{
			name: "pid reused", stat: statLine(fakePID, "prog", 'S', 101), status: goodStatus,
			wantErr: "pid 4242 now belongs to another process: it started at clock tick 101, the caller at 100", gone: true,
		},
		{
			name: "uid changed", stat: goodStat, status: statusText(0, 0, 1000, 1000, ""),
			wantErr: "process 4242 now runs as uid 0, not as uid 1000 it connected with", gone: true,
		},
		{
			name: "gid changed", stat: goodStat, status: statusText(1000, 1000, 1000, 50, ""),
			wantErr: "process 4242 now runs as gid 50, not as gid 1000 it connected with", gone: true,
		},
		{
			name: "stat without comm", stat: "4242 prog S 1\n", status: goodStatus,
			wantErr: "attesting process 4242: parsing <root>/4242/stat: no ')' after the command name",
		},
		{
			name: "truncated stat", stat: "4242 (prog) S 1 1\n", status: goodStatus,
			wantErr: "attesting process 4242: parsing <root>/4242/stat: 5 fields, want at least 22",
		},
		{
			name: "status without Uid", stat: goodStat, status: "Name:\tprog\nGid:\t1\t1\t1\t1\n",
			wantErr: "attesting process 4242: parsing <root>/4242/status: no Uid line",
		},
		{
			name: "status with a bad group", stat: goodStat, status: statusText(1000, 1000, 1000, 1000, "4 x"),
			wantErr: `attesting process 4242: parsing <root>/4242/status: groups line: "x" is not an id`,
		},
		{
			name: "unreadable stat", stat: goodStat, status: goodStatus,
			setup: func(t *testing.T, fp *fakeProc) {
				os.Remove(filepath.Join(fp.dir, "stat"))
				if err := os.Mkdir(filepath.Join(fp.dir, "stat"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "attesting process 4242: reading <root>/4242/stat: is a directory",
		},
		{
			name: "status gone", stat: goodStat, status: goodStatus,
			setup:   func(t *testing.T, fp *fakeProc) { os.Remove(filepath.Join(fp.dir, "status")) },
			wantErr: "process 4242 exited during attestation", gone: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProc(t, tt.stat, tt.status)
			binSum := fileSHA256(t, fp.bin)
			if tt.setup != nil {
				tt.setup(t, fp)
			}
			peer := fakePeer
			if tt.peer != nil {
				peer = *tt.peer
			}
			u := newFakeUnix(fp, tt.opts)
			res, err := u.Attest(t.Context(), peer)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "<root>", fp.root)
				if err == nil || err.Error() != want {
					t.Fatalf("error = %v, want %q", err, want)
				}
				if errors.Is(err, ErrProcessGone) != tt.gone {
					t.Fatalf("errors.Is(%v, ErrProcessGone) = %v, want %v", err, !tt.gone, tt.gone)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				AttrUnixAttested: "true",
				AttrPID:          strconv.Itoa(int(peer.PID)),
				AttrUID:          strconv.Itoa(int(peer.UID)),
				AttrGID:          strconv.Itoa(int(peer.GID)),
			}
			if peer.UID == 1000 {
				want[AttrUser] = "alice"
			}
			if peer.GID == 1000 {
				want[AttrGroup] = "staff"
			}
			for k, v := range tt.want {
				switch {
				case k == AttrPath && v == "bin":
					v = fp.bin
				case k == AttrSHA256 && v == "bin":
					v = binSum
				}
				want[k] = v
			}
			if !maps.Equal(res.Attributes, want) {
				t.Fatalf("attributes:\n got %v\nwant %v", res.Attributes, want)
			}
		})
	}
}

// What changes between the first look and the last voids the attestation.
func TestAttestFakeProcChangesMidway(t *testing.T) {
	tests := []struct {
		name    string
		noExe   bool
		change  func(t *testing.T, fp *fakeProc)
		wantErr string
	}{
		{
			// As the kernel shows a zombie: state Z, no exe link.
			name: "exited",
			change: func(t *testing.T, fp *fakeProc) {
				fp.write(t, "stat", statLine(fakePID, "prog", 'Z', 100))
				fp.link(t, "")
			},
			wantErr: "process 4242 exited during attestation",
		},
		{
			name:    "exited, no exe link to begin with",
			noExe:   true,
			change:  func(t *testing.T, fp *fakeProc) { fp.write(t, "stat", statLine(fakePID, "prog", 'Z', 100)) },
			wantErr: "process 4242 exited during attestation",
		},
		{
			name: "reaped",
			change: func(t *testing.T, fp *fakeProc) {
				for _, name := range []string{"stat", "status", "exe"} {
					os.Remove(filepath.Join(fp.dir, name))
				}
			},
			wantErr: "process 4242 exited during attestation",
		},
		{
			// Cannot happen through the pinned /proc/<pid> descriptor;
			// checked where stat is read again.
			name:    "replaced",
			noExe:   true,
			change:  func(t *testing.T, fp *fakeProc) { fp.write(t, "stat", statLine(fakePID, "prog", 'S', 101)) },
			wantErr: "process 4242 was replaced during attestation: pid 4242 now belongs to a process started at clock tick 101",
		},
		{
			name: "executed another program",
			change: func(t *testing.T, fp *fakeProc) {
				other := filepath.Join(t.TempDir(), "other")
				if err := os.WriteFile(other, []byte("other"), 0o755); err != nil {
					t.Fatal(err)
				}
				fp.link(t, other)
			},
			wantErr: "process 4242 executed another program during attestation",
		},
		{
			name: "binary modified",
			change: func(t *testing.T, fp *fakeProc) {
				if err := os.WriteFile(fp.bin, []byte("modified in place"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: "the executable of process 4242 was modified during attestation",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
			if tt.noExe {
				fp.link(t, "")
			}
			u := newFakeUnix(fp, UnixOptions{})
			u.midway = func() { tt.change(t, fp) }
			res, err := u.Attest(t.Context(), fakePeer)
			wantGone(t, err, tt.wantErr)
			if res.Attributes != nil {
				t.Fatalf("failed attestation returned attributes %v", res.Attributes)
			}
		})
	}
}

// The hash cache is keyed by the file version, not its path or inode alone.
func TestAttestHashFollowsContent(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	u := newFakeUnix(fp, UnixOptions{})
	sha := func() string {
		t.Helper()
		res, err := u.Attest(t.Context(), fakePeer)
		if err != nil {
			t.Fatal(err)
		}
		return res.Attributes[AttrSHA256]
	}
	first := sha()
	if first != fileSHA256(t, fp.bin) {
		t.Fatalf("sha256 %s, file has %s", first, fileSHA256(t, fp.bin))
	}
	keyBefore := func() string {
		res, _ := u.Attest(t.Context(), fakePeer)
		return res.Key
	}()

	// Same inode, same size, same mtime: only ctime tells the versions apart.
	fi, err := os.Stat(fp.bin)
	if err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(fp.bin)
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.ToUpper(content)
	f, err := os.OpenFile(fp.bin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(changed, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(fp.bin, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(fp.bin); fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatal("test setup: size or mtime changed")
	}
	second := sha()
	if second == first || second != fileSHA256(t, fp.bin) {
		t.Fatalf("after rewriting in place: sha256 %s, file has %s, old content %s", second, fileSHA256(t, fp.bin), first)
	}
	res, err := u.Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	if res.Key == keyBefore {
		t.Fatalf("Key %q unchanged after the binary changed", res.Key)
	}
	if n := u.hashes.len(); n != 2 {
		t.Fatalf("hash cache holds %d entries, want 2", n)
	}
}

func TestAttestKey(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, "4"))
	u := newFakeUnix(fp, UnixOptions{})
	key := func() string {
		t.Helper()
		res, err := u.Attest(t.Context(), fakePeer)
		if err != nil {
			t.Fatal(err)
		}
		return res.Key
	}
	k1 := key()
	if k2 := key(); k2 != k1 {
		t.Fatalf("Key changed between two attestations of the same process: %q, %q", k1, k2)
	}
	// Same process and binary, other groups (setgroups): another attestation.
	fp.write(t, "status", statusText(1000, 1000, 1000, 1000, "4 5"))
	if k3 := key(); k3 == k1 {
		t.Fatalf("Key %q unchanged after the supplementary groups changed", k3)
	}
}

// countingHandler counts debug records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

func TestAttestHashesOnce(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	big := bytes.Repeat([]byte("wid"), 8<<20/3)
	if err := os.WriteFile(fp.bin, big, 0o755); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(big)
	h := &countingHandler{msgs: map[string]int{}}
	u := newFakeUnix(fp, UnixOptions{Logger: slog.New(h)})

	const callers = 32
	var (
		wg    sync.WaitGroup
		ready = make(chan struct{})
	)
	for range callers {
		wg.Go(func() {
			<-ready
			res, err := u.Attest(t.Context(), fakePeer)
			if err != nil || res.Attributes[AttrSHA256] != hex.EncodeToString(want[:]) {
				t.Errorf("concurrent attestation: %v, sha256 %q", err, res.Attributes[AttrSHA256])
			}
		})
	}
	close(ready)
	wg.Wait()
	if n := h.count("hashed executable"); n != 1 {
		t.Fatalf("%d callers hashed the binary %d times, want once", callers, n)
	}
}

// The file hashed must be the version that was stat'ed; if the process
// moved on, the attestation fails instead of hashing something else.
func TestAttestHashChecksFileVersion(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	u := newFakeUnix(fp, UnixOptions{})
	f, err := os.Open(fp.bin)
	if err != nil {
		t.Fatal(err)
	}
	k, err := fileKeyOf(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.hashFile(filepath.Join(fp.dir, "exe"), fileKey{ino: k.ino + 1}); !errors.Is(err, errExeChanged) {
		t.Fatalf("hashing with another file's key: %v, want errExeChanged", err)
	}
	if _, err := u.hashFile(filepath.Join(fp.dir, "nothing"), k); !errors.Is(err, errExeChanged) {
		t.Fatalf("hashing a vanished exe: %v, want errExeChanged", err)
	}
	other := k
	other.ctime++
	_, err = u.sha256(t.Context(), fakePID, filepath.Join(fp.dir, "exe"), other)
	wantGone(t, err, "process 4242 executed another program during attestation")
	if u.hashes.len() != 0 {
		t.Fatalf("a failed hash was cached")
	}
	sum, err := u.sha256(t.Context(), fakePID, filepath.Join(fp.dir, "exe"), k)
	if err != nil || sum != fileSHA256(t, fp.bin) {
		t.Fatalf("sha256 = %q, %v; want %s", sum, err, fileSHA256(t, fp.bin))
	}
}

// status larger than the read buffer (many supplementary groups) is read whole.
func TestAttestManyGroups(t *testing.T) {
	var ids, want []string
	for g := 3000; g > 0; g-- {
		ids = append(ids, strconv.Itoa(g))
	}
	for g := 1; g <= 3000; g++ {
		want = append(want, strconv.Itoa(g))
	}
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, strings.Join(ids, " ")))
	res, err := newFakeUnix(fp, UnixOptions{}).Attest(t.Context(), fakePeer)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Attributes[AttrSupplementaryGIDs]; got != strings.Join(want, ",") {
		t.Fatalf("supplementary gids: got %d bytes, want 1..3000", len(got))
	}
}

func TestAttestHashCanceled(t *testing.T) {
	fp := newFakeProc(t, statLine(fakePID, "prog", 'S', 100), statusText(1000, 1000, 1000, 1000, ""))
	u := newFakeUnix(fp, UnixOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := u.Attest(ctx, fakePeer)
	if err == nil || err.Error() != "attesting process 4242: hashing its executable: context canceled" || !errors.Is(err, context.Canceled) {
		t.Fatalf("attesting with a canceled context: %v", err)
	}
}

func TestHashCacheEvictsLeastRecent(t *testing.T) {
	c := newHashCache(2)
	a, b, d := fileKey{ino: 1}, fileKey{ino: 2}, fileKey{ino: 3}
	c.put(a, "a")
	c.put(b, "b")
	if _, ok := c.get(a); !ok {
		t.Fatal("a missing")
	}
	c.put(d, "d")
	if _, ok := c.get(b); ok {
		t.Fatal("b, the least recently used, was kept")
	}
	for k, want := range map[fileKey]string{a: "a", d: "d"} {
		if got, ok := c.get(k); !ok || got != want {
			t.Fatalf("get(%v) = %q, %v; want %q", k, got, ok, want)
		}
	}
	if c.len() != 2 {
		t.Fatalf("len = %d", c.len())
	}
	// Same size, other ctime: another version of the file.
	if _, ok := c.get(fileKey{ino: 1, ctime: 1}); ok {
		t.Fatal("a key differing in ctime hit the cache")
	}
}

func TestNameCache(t *testing.T) {
	now := time.Unix(1000, 0)
	var lookups atomic.Int32
	fail := errors.New("nss is down")
	c := newNameCache(3, func(id uint32) (string, error) {
		lookups.Add(1)
		switch id {
		case 1:
			return "one", nil
		case 9:
			return "", fail
		}
		return "", errUnknownID
	})
	c.now = func() time.Time { return now }

	get := func(id uint32) string {
		t.Helper()
		name, err := c.get(id)
		if err != nil {
			t.Fatal(err)
		}
		return name
	}
	first, second := get(1), get(1)
	if first != "one" || second != "one" || lookups.Load() != 1 {
		t.Fatalf("two gets within the TTL did %d lookups", lookups.Load())
	}
	now = now.Add(nameTTL)
	if get(1) != "one" || lookups.Load() != 2 {
		t.Fatalf("a get after the TTL did not look up again (%d lookups)", lookups.Load())
	}
	first, second = get(2), get(2)
	if first != "" || second != "" || lookups.Load() != 3 {
		t.Fatalf("unknown id: %d lookups, want it cached", lookups.Load())
	}
	if _, err := c.get(9); !errors.Is(err, fail) {
		t.Fatalf("failed lookup: %v", err)
	}
	if name, err := c.get(9); err != nil || name != "" || lookups.Load() != 4 {
		t.Fatalf("failed lookup is not cached briefly: %q, %v, %d lookups", name, err, lookups.Load())
	}
	now = now.Add(nameErrTTL)
	if _, err := c.get(9); !errors.Is(err, fail) || lookups.Load() != 5 {
		t.Fatalf("failed lookup cached past %s: %v", nameErrTTL, err)
	}
	for id := uint32(10); id < 20; id++ {
		get(id)
	}
	if n := len(c.entries); n > 3 {
		t.Fatalf("name cache grew to %d entries, bound 3", n)
	}
}

func BenchmarkAttestSelf(b *testing.B) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(b)
	if _, err := u.Attest(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := u.Attest(context.Background(), p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAttestSelfParallel(b *testing.B) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(b)
	if _, err := u.Attest(context.Background(), p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := u.Attest(context.Background(), p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestConnMemo: a connection's second attestation comes from its memo, and
// the memo is dropped as soon as the binary or the credentials it vouched
// for differ, or the connection closes.
func TestConnMemo(t *testing.T) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(t)
	p.memo = newConnMemo()
	ctx := t.Context()
	first, err := u.Attest(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if p.memo.dir < 0 || p.memo.res.Key != first.Key {
		t.Fatalf("the first attestation was not remembered: %+v", p.memo)
	}
	heldDir := p.memo.dir
	again, err := u.Attest(ctx, p)
	if err != nil || again.Key != first.Key || p.memo.dir != heldDir {
		t.Fatalf("the second attestation did not come from the memo: %v, dir %d -> %d", err, heldDir, p.memo.dir)
	}

	// A memo whose binary no longer matches is not used: the full path
	// runs again (and remembers the truth).
	p.memo.exe.ino++
	p.memo.res = Result{Key: "stale"}
	res, err := u.Attest(ctx, p)
	if err != nil || res.Key != first.Key {
		t.Fatalf("a memo for another binary answered: %+v, %v", res, err)
	}
	// Likewise for credentials that changed (a setuid, say).
	p.memo.status.euid++
	p.memo.res = Result{Key: "stale"}
	if res, err := u.Attest(ctx, p); err != nil || res.Key != first.Key {
		t.Fatalf("a memo for other credentials answered: %+v, %v", res, err)
	}
	// And it expires.
	p.memo.expires = time.Now().Add(-time.Second)
	p.memo.res = Result{Key: "stale"}
	if res, err := u.Attest(ctx, p); err != nil || res.Key != first.Key {
		t.Fatalf("an expired memo answered: %+v, %v", res, err)
	}

	p.memo.close()
	if p.memo.dir != -1 {
		t.Fatal("closing the connection left its /proc directory open")
	}
	if res, err := u.Attest(ctx, p); err != nil || res.Key != first.Key || p.memo.dir != -1 {
		t.Fatalf("attesting on a closed connection: %+v, %v, dir %d", res, err, p.memo.dir)
	}
}

func BenchmarkAttestSelfMemo(b *testing.B) {
	u := NewUnix(UnixOptions{})
	p := selfPeer(b)
	p.memo = newConnMemo()
	for b.Loop() {
		if _, err := u.Attest(b.Context(), p); err != nil {
			b.Fatal(err)
		}
	}
}
