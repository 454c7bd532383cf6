// Command issuance measures audited X509-SVID issuance over loopback mTLS
// gRPC: it starts an auth service on a temp data dir, joins a bot through a
// real join token, then N clients each generate a P-256 key and ask for an
// SVID, as fast as they can, for a fixed time. With -request csr (the default)
// each request carries a PKCS#10 CSR whose signature the service checks; with
// -request pubkey it carries only the public key, as an agent minting keys for
// its workloads does (the bot's mTLS identity is the proof that matters there).
//
// -store postgres runs the same against a private PostgreSQL (fsync on),
// for the SQLite-against-PostgreSQL figure. -replicas N (with a PostgreSQL
// store) starts N auth replicas of one trust domain on that database, in
// this process, the first creating it and the others opening its CA keys
// with its key encryption key, and spreads the clients over them in turn.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/ca"
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
	replicas := flag.Int("replicas", 1, "auth replicas on the one store (more than 1 needs a PostgreSQL store); client i uses replica i mod N")
	flag.Parse()
	if *request != "csr" && *request != "pubkey" {
		log.Fatalf("-request is %q; use csr or pubkey", *request)
	}
	if *replicas < 1 || (*replicas > 1 && *storeArg == "sqlite") {
		log.Fatalf("-replicas is %d; use 1, or more with -store postgres", *replicas)
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
	if err := run(*clients, *replicas, *duration, *request, *storeArg); err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
}

func run(clients, replicas int, duration time.Duration, request, storeArg string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := os.MkdirTemp("", "wid-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
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
	var (
		spec  storeurl.Spec
		infos []auth.Info
		dones []chan error
	)
	for r := range replicas {
		dir := filepath.Join(root, fmt.Sprintf("replica-%d", r))
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if spec, err = storeurl.Parse(storeURL, dir); err != nil {
			return err
		}
		if replicas > 1 && spec.Kind == "sqlite" {
			return fmt.Errorf("-replicas %d needs a PostgreSQL store, not the SQLite file %s", replicas, spec.Path)
		}
		cfg := auth.Config{DataDir: dir, Store: spec.Open, StoreFile: spec.Path, TrustDomain: "bench.example", ListenAddr: "127.0.0.1:0", Version: "bench"}
		if r > 0 {
			// The first replica's key encryption key opens the CA keys.
			cfg.KEKFile = filepath.Join(root, "replica-0", "keys", ca.KEKFileName)
		}
		srv, err := auth.Open(ctx, cfg)
		if err != nil {
			return fmt.Errorf("replica %d: %w", r, err)
		}
		defer srv.Close()
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		dones = append(dones, done)
		infos = append(infos, srv.Info())
	}
	info := infos[0]

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
		c, err := client.Dial(client.Config{Auth: infos[i%replicas].Addr, Identity: id})
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
	fmt.Printf("issuance (%s, %s store, %d replica(s)): %d clients, %s: %d SVIDs, %.0f SVIDs/s, p50 %s, p99 %s, max %s, failures %d\n",
		request, spec.Kind, replicas, clients, elapsed.Round(time.Millisecond), len(latencies), float64(len(latencies))/elapsed.Seconds(),
		pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond), failures)

	// Every SVID answered must be in the audit log.
	v, err := admin.VerifyAudit(ctx, &authv1.VerifyAuditRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("audit: %d events, verified %v\n", v.Events, v.Ok)
	cancel()
	for _, done := range dones {
		if err := <-done; err != nil {
			return err
		}
	}
	return nil
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
