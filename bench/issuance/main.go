// Command issuance measures audited X509-SVID issuance over loopback mTLS
// gRPC: it starts an auth service on a temp data dir, joins a bot through a
// real join token, then N clients each generate a P-256 key and ask for an
// SVID, as fast as they can, for a fixed time. With -request csr (the default)
// each request carries a PKCS#10 CSR whose signature the service checks; with
// -request pubkey it carries only the public key, as an agent minting keys for
// its workloads does (the bot's mTLS identity is the proof that matters there).
//
// -store postgres runs the same against a private PostgreSQL (fsync on),
// for the SQLite-against-PostgreSQL figure.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store/postgres/pgtest"
	"github.com/wid-project/wid/internal/core/store/storeurl"
)

func main() {
	clients := flag.Int("clients", 16, "concurrent clients, each on its own connection")
	duration := flag.Duration("duration", 10*time.Second, "how long to issue")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	request := flag.String("request", "csr", "what each request carries: csr or pubkey")
	storeArg := flag.String("store", "sqlite", "the auth service's store: sqlite (in the temp data dir), postgres (a private PostgreSQL 15 with fsync on, started for the run) or a --store URL")
	flag.Parse()
	if *request != "csr" && *request != "pubkey" {
		log.Fatalf("-request is %q; use csr or pubkey", *request)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*clients, *duration, *request, *storeArg); err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
}

func run(clients int, duration time.Duration, request, storeArg string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "wid-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	storeURL := ""
	switch storeArg {
	case "sqlite":
	case "postgres":
		pg, err := pgtest.Start(ctx, pgtest.Options{Durable: true})
		if err != nil {
			return err
		}
		defer pg.Stop()
		if _, storeURL, err = pg.CreateDatabase(ctx); err != nil {
			return err
		}
	default:
		storeURL = storeArg
	}
	spec, err := storeurl.Parse(storeURL, dir)
	if err != nil {
		return err
	}
	srv, err := auth.Open(ctx, auth.Config{DataDir: dir, Store: spec.Open, TrustDomain: "bench.example", ListenAddr: "127.0.0.1:0", Version: "bench"})
	if err != nil {
		return err
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	info := srv.Info()

	admin, err := client.Dial(client.Config{AdminSocket: info.AdminSocket})
	if err != nil {
		return err
	}
	defer admin.Close()
	role := &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: "bench"}},
		Spec:   resource.RoleSpec{Allow: resource.RoleConditions{SPIFFE: []resource.SPIFFEGrant{{Path: "/svc/*"}}}},
	}
	doc, err := resource.MarshalJSON(role)
	if err != nil {
		return err
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{doc}}); err != nil {
		return fmt.Errorf("creating role: %w", err)
	}
	bot, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "bench", Roles: []string{"bench"}})
	if err != nil {
		return fmt.Errorf("creating bot: %w", err)
	}
	id, err := join(ctx, info.Addr, info.CAPin, bot.Token)
	if err != nil {
		return err
	}

	var (
		mu        sync.Mutex
		latencies []time.Duration
		failures  int
		wg        sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(duration)
	for i := 0; i < clients; i++ {
		c, err := client.Dial(client.Config{Auth: info.Addr, Identity: id})
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var local []time.Duration
			fails := 0
			for n := 0; time.Now().Before(deadline); n++ {
				t0 := time.Now()
				key, err := client.NewKey()
				if err != nil {
					fails++
					continue
				}
				req := &authv1.SignX509SVIDRequest{SpiffeId: fmt.Sprintf("/svc/w%d", i)}
				if request == "csr" {
					req.Csr, err = client.NewCSR(key)
				} else {
					req.PublicKey, err = x509.MarshalPKIXPublicKey(key.Public())
				}
				if err != nil {
					fails++
					continue
				}
				_, err = c.SignX509SVID(ctx, req)
				if err != nil {
					fails++
					if fails == 1 {
						log.Printf("client %d: %v", i, err)
					}
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			failures += fails
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(float64(len(latencies)-1)*p)]
	}
	fmt.Printf("issuance (%s, %s store): %d clients, %s: %d SVIDs, %.0f SVIDs/s, p50 %s, p99 %s, max %s, failures %d\n",
		request, spec.Kind, clients, elapsed.Round(time.Millisecond), len(latencies), float64(len(latencies))/elapsed.Seconds(),
		pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond), failures)

	// Every SVID answered must be in the audit log.
	v, err := admin.VerifyAudit(ctx, &authv1.VerifyAuditRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("audit: %d events, verified %v\n", v.Events, v.Ok)
	cancel()
	return <-done
}

func join(ctx context.Context, addr, pin, token string) (*client.Identity, error) {
	c, err := client.Dial(client.Config{Auth: addr, CAPin: pin})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	key, err := client.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return nil, err
	}
	resp, err := c.Join(ctx, &authv1.JoinRequest{Token: token, Csr: csr, Host: "bench"})
	if err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	return client.NewIdentity(key, resp.CertChain, resp.HostCa)
}
