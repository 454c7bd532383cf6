package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/testkit"
)

// SPIRE 1.13 federated with wid both ways over https_spiffe, configured as
// docs/federation.md's "wid and SPIRE" tells an operator to: each side's
// bundle endpoint, each side given the other's bundle once out of band, and
// a workload of each that federates with the other.

// spireProc is a running spire-server or spire-agent; its log is shown when
// the test fails.
type spireProc struct {
	name   string
	cmd    *exec.Cmd
	out    *testkit.SyncBuffer
	exited chan struct{}
}

func startSpireProc(t *testing.T, name string, argv ...string) *spireProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	p := &spireProc{name: name, cmd: cmd, out: testkit.NewSyncBuffer(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.exited
			t.Errorf("%s did not stop within 10s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.out)
		}
	})
	return p
}

// running fails the test, with the log, if the process has exited.
func (p *spireProc) running(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, p.out)
	default:
	}
}

// The bundle endpoint serves SPIRE's https_spiffe profile, with the
// server's own SVID, spiffe://spire.test/spire/server. federates_with is
// wid's endpoint, authenticated by wid's bundle endpoint SPIFFE ID.
const spireFedServerConf = `server {
    bind_address = "127.0.0.1"
    bind_port = "{{port}}"
    socket_path = "{{dir}}/server.sock"
    trust_domain = "spire.test"
    data_dir = "{{dir}}/server"
    log_level = "INFO"
    federation {
        bundle_endpoint {
            address = "127.0.0.1"
            port = {{bundle_port}}
            profile "https_spiffe" {}
        }
        federates_with "{{wid_td}}" {
            bundle_endpoint_url = "{{wid_endpoint}}"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://{{wid_td}}/_wid/bundle-endpoint"
            }
        }
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "{{dir}}/server/datastore.sqlite3"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "{{dir}}/server/keys.json"
        }
    }
}
`

// The agent trusts the server it is first given (insecure_bootstrap): the
// server is the test's, on loopback, started a moment ago.
const spireFedAgentConf = `agent {
    data_dir = "{{dir}}/agent"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "{{port}}"
    socket_path = "{{dir}}/agent.sock"
    insecure_bootstrap = true
    trust_domain = "spire.test"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "{{dir}}/agent"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`

var spireTokenRE = regexp.MustCompile(`Token:\s+(\S+)`)

// spireServerCLI runs spire-server ARGS against the server's API socket.
func spireServerCLI(bin, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "-socketPath", filepath.Join(dir, "server.sock"))
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "spire-server"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("spire-server %s: %v: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// freeAddrs is n distinct loopback host:ports, free a moment ago: all are
// held open together, so none is handed out twice.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}

// Done-when: SPIRE 1.13 federated with wid both ways over https_spiffe; a
// spire-agent workload and a wid workload do mTLS with each other, each
// authorizing the other's exact SPIFFE ID, each side as client and server.
func TestFederationWithSpire(t *testing.T) {
	bin := spireBin(t, "spire-agent", "spire-server")
	const widTD, spireTD = "example.org", "spire.test"
	spirePeer := spiffeid.RequireFromString("spiffe://" + spireTD + "/svc/peer")

	// Short path: unix socket names are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "spire-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"server", "agent"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	addrs := freeAddrs(t, 3)
	widAddr, serverAddr, bundleAddr := addrs[0], addrs[1], addrs[2]
	widEndpoint := "https://" + widAddr + "/"
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	conf := strings.NewReplacer("{{dir}}", dir, "{{port}}", port(serverAddr), "{{bundle_port}}", port(bundleAddr),
		"{{wid_td}}", widTD, "{{wid_endpoint}}", widEndpoint)
	for name, tmpl := range map[string]string{"server.conf": spireFedServerConf, "agent.conf": spireFedAgentConf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(conf.Replace(tmpl)), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// spire-server starts (its sqlite schema, its CA) while widagent does.
	server := startSpireProc(t, "spire-server", filepath.Join(bin, "spire-server"), "run", "-config", filepath.Join(dir, "server.conf"))
	wid := &federatedDomain{
		agent: startAgent(t, newDataDir(t), "--trust-domain", widTD, "--no-dev-identity",
			"--bundle-endpoint-listen", widAddr),
		endpoint: widEndpoint,
		peer:     spiffeid.RequireFromString("spiffe://" + widTD + "/svc/peer"),
	}
	widBundle := filepath.Join(t.TempDir(), widTD+".json")
	if err := os.WriteFile(widBundle, []byte(wid.widctl("bundle", "export", "--format", "spiffe").must(t).stdout), 0o600); err != nil {
		t.Fatal(err)
	}

	// The first bundle show is also the wait for the server's API.
	var spireBundle string
	testkit.Succeeds(t, 60*time.Second, func() error {
		server.running(t)
		spireBundle, err = spireServerCLI(bin, dir, "bundle", "show", "-format", "spiffe")
		return err
	}, "spire-server never answered on its API socket")

	// SPIRE side: wid's bundle, once; an agent to attest with a join token;
	// the workload's entry federating with wid.
	mustSpire := func(args ...string) string {
		t.Helper()
		out, err := spireServerCLI(bin, dir, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	mustSpire("bundle", "set", "-format", "spiffe", "-id", "spiffe://"+widTD, "-path", widBundle)
	m := spireTokenRE.FindStringSubmatch(mustSpire("token", "generate", "-ttl", "600"))
	if m == nil {
		t.Fatal("spire-server token generate printed no token")
	}
	agentID := "spiffe://" + spireTD + "/spire/agent/join_token/" + m[1]
	mustSpire("entry", "create", "-parentID", agentID, "-spiffeID", spirePeer.String(),
		"-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()), "-federatesWith", "spiffe://"+widTD)
	agent := startSpireProc(t, "spire-agent", filepath.Join(bin, "spire-agent"), "run", "-config", filepath.Join(dir, "agent.conf"), "-joinToken", m[1])

	// SPIRE fetches wid's bundle from wid's endpoint now, authenticating
	// it as spiffe://example.org/_wid/bundle-endpoint with the bundle just
	// set: the command fails if that fetch does. (Its own schedule would
	// try again only a minute after the failed try at startup, made
	// before it held wid's bundle.)
	mustSpire("federation", "refresh", "-id", "spiffe://"+widTD)

	// wid side: SPIRE's bundle, once, and its endpoint with the SPIFFE ID
	// SPIRE's server serves it with; a workload identity federating with it.
	spireFile := filepath.Join(t.TempDir(), spireTD+".json")
	if err := os.WriteFile(spireFile, []byte(spireBundle), 0o600); err != nil {
		t.Fatal(err)
	}
	wid.widctl("federation", "create", spireTD, "--url", "https://"+bundleAddr+"/", "--profile", "https_spiffe",
		"--endpoint-spiffe-id", "spiffe://"+spireTD+"/spire/server", "--bundle", spireFile).must(t)
	wid.widctl("wi", "create", "peer", "--spiffe-id", "/svc/peer", "--rule", fmt.Sprintf("workload.unix.uid=%d", os.Getuid()),
		"--federates-with", spireTD).must(t)

	// wid fetched SPIRE's bundle from SPIRE's endpoint.
	var refresh error
	if !testkit.WithinEvery(20*time.Second, 50*time.Millisecond, func() bool {
		switch st := federations(t, wid.agent)[spireTD].Status; {
		case st == nil || st.LastRefresh.IsZero() && st.Error == "":
			refresh = fmt.Errorf("no refresh yet")
		case st.Error != "":
			refresh = fmt.Errorf("%s", st.Error)
		default:
			refresh = nil
		}
		return refresh == nil
	}) {
		t.Fatalf("wid never refreshed %s's bundle from its endpoint: %v", spireTD, refresh)
	}

	spireSocket := filepath.Join(dir, "agent.sock")
	testkit.Succeeds(t, 60*time.Second, func() error {
		agent.running(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+spireSocket))
		if err == nil && svid.ID != spirePeer {
			err = fmt.Errorf("got %s instead", svid.ID)
		}
		return err
	}, "spire-agent never served %s", spirePeer)
	spireSrc, widSrc := x509Source(t, spireSocket), x509Source(t, wid.workload)
	waitFederated(t, spireSrc, wid.peer.TrustDomain())
	waitFederated(t, widSrc, spirePeer.TrustDomain())

	// The SPIRE workload serves the wid one, and the way back; each
	// authorizes exactly the other's SPIFFE ID.
	if err := mtlsOnce(context.Background(), mtlsServer(t, spireSrc, wid.peer), widSrc, spirePeer); err != nil {
		t.Fatalf("mTLS from wid's %s to SPIRE's %s: %v", wid.peer, spirePeer, err)
	}
	if err := mtlsOnce(context.Background(), mtlsServer(t, widSrc, spirePeer), spireSrc, wid.peer); err != nil {
		t.Fatalf("mTLS from SPIRE's %s to wid's %s: %v", spirePeer, wid.peer, err)
	}
	// Another ID of the federated trust domain is refused, either way.
	if err := mtlsOnce(context.Background(), mtlsServer(t, spireSrc, spiffeid.RequireFromString("spiffe://"+widTD+"/svc/other")), widSrc, spirePeer); err == nil {
		t.Errorf("SPIRE's workload authorizing spiffe://%s/svc/other accepted %s", widTD, wid.peer)
	}
	if err := mtlsOnce(context.Background(), mtlsServer(t, widSrc, spiffeid.RequireFromString("spiffe://"+spireTD+"/svc/other")), spireSrc, wid.peer); err == nil {
		t.Errorf("wid's workload authorizing spiffe://%s/svc/other accepted %s", spireTD, spirePeer)
	}
}
