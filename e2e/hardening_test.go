package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// storeBytes is the size of the SQLite store with its journal files.
func storeBytes(t *testing.T, dataDir string) int64 {
	t.Helper()
	var n int64
	for _, f := range []string{"wid.db", "wid.db-wal", "wid.db-shm", "wid.db-journal"} {
		if fi, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestAnonymousJoinsCannotFillTheDisk is issue 14's first hole with the
// real binaries: 50 anonymous joins with a 3 MB host name each are refused
// with InvalidArgument naming the field, the store grows by far less than
// 20 MB, and widctl audit ls still answers.
func TestAnonymousJoinsCannotFillTheDisk(t *testing.T) {
	a := startAgent(t, newDataDir(t), "--no-dev-identity")
	c, err := client.Dial(client.Config{Auth: a.addr, CAPin: a.pin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := client.NewKey()
	csr, _ := client.NewCSR(key)
	host := strings.Repeat("h", 3<<20)
	before := storeBytes(t, a.dataDir)
	for i := range 50 {
		_, err := c.Join(context.Background(), &authv1.JoinRequest{Token: fmt.Sprintf("guess-%d", i), Csr: csr, Host: host})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "host is 3145728 bytes long, over the limit of 253 bytes") {
			t.Fatalf("join %d with a 3 MB host: %v, want InvalidArgument naming host and its limit", i, err)
		}
	}
	grown := storeBytes(t, a.dataDir) - before
	t.Logf("50 joins with a 3 MB host grew the store by %d bytes", grown)
	if grown >= 20<<20 {
		t.Errorf("the store grew by %d bytes, want under 20 MB", grown)
	}
	ls := a.widctl("audit", "ls", "--type", "bot.join.denied", "--limit", "1000", "--format", "json").must(t, "audit ls")
	if n := strings.Count(ls.stdout, `"type": "bot.join.denied"`); n == 0 {
		t.Errorf("audit ls shows no refused join:\n%.2000s", ls.stdout)
	}
}

// vmStatus reads a field of /proc/PID/status in KiB.
func vmStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s in /proc/%d/status: %v", field, pid, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestLoginFloodSparesMemoryAndWorkloads is issue 14's second hole with
// the real binaries: 100 parallel wrong logins keep widagent under 1 GiB
// resident, and a Workload API fetch meanwhile answers within a second.
func TestLoginFloodSparesMemoryAndWorkloads(t *testing.T) {
	a := startAgent(t, newDataDir(t))
	a.widctl("role", "create", "dev", "--spiffe-path", "/team/alice/**").must(t)
	a.widctl("user", "add", "alice", "--roles", "dev").must(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wl := workloadapi.WithAddr("unix://" + a.workload)
	if _, err := workloadapi.FetchX509SVID(ctx, wl); err != nil {
		t.Fatalf("Workload API before the flood: %v", err)
	}
	quietStart := time.Now()
	if _, err := workloadapi.FetchX509SVID(ctx, wl); err != nil {
		t.Fatalf("Workload API before the flood: %v", err)
	}
	quiet := time.Since(quietStart)
	pid := a.cmd.Process.Pid

	const n = 100
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codeN = map[codes.Code]int{}
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			c, err := client.Dial(client.Config{Auth: a.addr, CAPin: a.pin})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			key, _ := client.NewKey()
			csr, _ := client.NewCSR(key)
			user := "alice"
			if i%2 == 1 {
				user = fmt.Sprintf("nobody-%d", i)
			}
			<-start
			_, err = c.Login(ctx, &authv1.LoginRequest{User: user, Password: "not the password at all", Csr: csr})
			mu.Lock()
			codeN[status.Code(err)]++
			mu.Unlock()
		})
	}
	close(start)
	// Three fetches in a row while the flood runs; the middle one is
	// judged, so that one scheduling hiccup of a loaded machine does not
	// decide (each is logged).
	var fetches []time.Duration
	for range 3 {
		fetchStart := time.Now()
		if _, err := workloadapi.FetchX509SVID(ctx, wl); err != nil {
			t.Fatalf("Workload API during the flood: %v", err)
		}
		fetches = append(fetches, time.Since(fetchStart))
	}
	rssDuring := vmStatus(t, pid, "VmRSS")
	all := slices.Clone(fetches)
	slices.Sort(fetches)
	fetch := fetches[1]
	wg.Wait()
	peak := vmStatus(t, pid, "VmHWM")
	t.Logf("100 parallel logins: answers %v; Workload API fetch before %s, meanwhile %v; VmRSS during %d MiB, peak (VmHWM) %d MiB", codeN, quiet, all, rssDuring>>10, peak>>10)
	if fetch > time.Second {
		t.Errorf("Workload API fetches took %v during the login flood, want the median under 1s", all)
	}
	if peak >= 1<<20 {
		t.Errorf("widagent peaked at %d MiB resident during 100 parallel logins, want under 1 GiB", peak>>10)
	}
	if codeN[codes.ResourceExhausted] == 0 {
		t.Errorf("no login was refused for load: %v", codeN)
	}
	for c := range codeN {
		if c != codes.ResourceExhausted && c != codes.Unauthenticated && c != codes.PermissionDenied {
			t.Errorf("a login answered %s: %v", c, codeN)
		}
	}
}
