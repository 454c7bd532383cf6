package client_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/testkit"
)

// frozenAddr accepts connections and never answers, as a stopped
// (SIGSTOP) replica's kernel does.
func frozenAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestDialFailsOverToTheNextReplica: a call goes past a replica that
// refuses connections and one that never answers to the one that serves,
// which then stays current.
func TestDialFailsOverToTheNextReplica(t *testing.T) {
	t.Parallel()
	srv := authtest.Start(t)
	for _, c := range []struct {
		name string
		dead string
		max  time.Duration
	}{
		{"refused", testkit.ClosedAddr(t), 2 * time.Second},
		{"frozen", frozenAddr(t), client.ConnectTimeout + 3*time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := client.Dial(client.Config{Auth: c.dead + "," + srv.Addr, CAPin: srv.CAPin})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if cl.Current() != c.dead {
				t.Fatalf("first current replica is %s, want the first given, %s", cl.Current(), c.dead)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := cl.Ping(ctx, &authv1.PingRequest{})
			if err != nil {
				t.Fatalf("ping with %s down: %v", c.dead, err)
			}
			if took := time.Since(start); took > c.max {
				t.Errorf("failing over past a %s replica took %s, want under %s", c.name, took, c.max)
			}
			if resp.GetTrustDomain() != srv.TrustDomain || cl.Current() != srv.Addr {
				t.Fatalf("ping answered by %q, current %s; want %s at %s", resp.GetTrustDomain(), cl.Current(), srv.TrustDomain, srv.Addr)
			}
			// The replica that answered stays current: the next call goes straight to it.
			if _, err := cl.Ping(ctx, &authv1.PingRequest{}); err != nil || cl.Current() != srv.Addr {
				t.Fatalf("second ping: %v, current %s", err, cl.Current())
			}
		})
	}
}

// TestDialTakesEveryAddressOfAName: a host name with several addresses
// stands for several replicas, as a list does.
func TestDialTakesEveryAddressOfAName(t *testing.T) {
	srv := authtest.Start(t)
	_, port, _ := net.SplitHostPort(srv.Addr)
	// 127.0.0.2 is loopback too, and nothing listens there on this port.
	restore := client.SetLookupHost(func(_ context.Context, host string) ([]string, error) {
		if host != "replicas.wid.test" {
			t.Errorf("resolving %q", host)
		}
		return []string{"127.0.0.2", "127.0.0.1"}, nil
	})
	defer restore()
	cl, err := client.Dial(client.Config{Auth: "replicas.wid.test:" + port, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if got, want := strings.Join(cl.Addrs(), ","), "127.0.0.2:"+port+",127.0.0.1:"+port; got != want {
		t.Fatalf("replicas %s, want %s", got, want)
	}
	if cl.Target != "replicas.wid.test:"+port {
		t.Fatalf("target %q, want the name as given", cl.Target)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cl.Ping(ctx, &authv1.PingRequest{}); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if cl.Current() != srv.Addr {
		t.Fatalf("current %s, want %s", cl.Current(), srv.Addr)
	}
}

// TestSplitAuth: the checks of an --auth list.
func TestSplitAuth(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"a:1", "a:1", ""},
		{"a:1, b:2 ,a:1", "a:1,b:2", ""},
		{"a:1,b", "", `auth address "b" is not host:port`},
		{" , ", "", "names no host:port"},
	} {
		got, err := client.SplitAuth(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("SplitAuth(%q) = %v, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("SplitAuth(%q) = %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}
