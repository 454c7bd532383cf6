package agent_test

import (
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/testkit"
)

// TestRetriesDuringAnOutageAreLogged starts an agent (with its identity)
// while the auth service is out: its address refuses connections, or
// accepts them and answers nothing (a frozen or cut-off host). Within a
// few seconds the agent's log says it is retrying, and why.
func TestRetriesDuringAnOutageAreLogged(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		addr         func(t *testing.T) string
	}{
		{"refused", "connection refused", func(t *testing.T) string {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			lis.Close()
			return lis.Addr().String()
		}},
		{"silent", "has not answered yet", func(t *testing.T) string {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var conns []net.Conn
			var mu sync.Mutex
			go func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
			t.Cleanup(func() {
				lis.Close()
				mu.Lock()
				defer mu.Unlock()
				for _, c := range conns {
					c.Close()
				}
			})
			return lis.Addr().String()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			var logs testkit.SyncBuffer
			start(t, func(c *agent.Config) {
				c.AuthAddr = addr
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			})
			t0 := time.Now()
			testkit.Eventually(t, 5*time.Second, func() bool {
				out := logs.String()
				return strings.Contains(out, tc.reason) && strings.Contains(out, "auth="+addr)
			}, "with an auth service out (%s), the agent's log has no retry with its reason", tc.name)
			t.Logf("first retry line after %s:\n%s", time.Since(t0).Round(time.Millisecond), logs.String())
		})
	}
}
