package e2e

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const sdsSecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sdsUpdate is one SDS push as the bench reads it: when it arrived, the
// default SVID's leaf, and the serials the trust domain's validation
// context's CRLs list (hex).
type sdsUpdate struct {
	at      time.Time
	leaf    *x509.Certificate
	revoked map[string]bool
	// crls counts the CRLs of the trust domain's validation context.
	crls int
	err  error
}

// watchSDS streams "default" and "ROOTCA" from the agent's socket, acking
// each push, and hands each on.
func watchSDS(ctx context.Context, t *testing.T, socket string) <-chan sdsUpdate {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "ROOTCA"}, TypeUrl: sdsSecretType}); err != nil {
		t.Fatal(err)
	}
	out := make(chan sdsUpdate, 64)
	go func() {
		defer close(out)
		for {
			resp, err := st.Recv()
			if err != nil {
				if ctx.Err() == nil {
					out <- sdsUpdate{err: err}
				}
				return
			}
			u := sdsUpdate{at: time.Now(), revoked: map[string]bool{}}
			for _, r := range resp.Resources {
				var s tlsv3.Secret
				if err := r.UnmarshalTo(&s); err != nil {
					u.err = err
					continue
				}
				if tc := s.GetTlsCertificate(); tc != nil {
					svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
					if err != nil {
						u.err = err
						continue
					}
					u.leaf = svid.Certificates[0]
				}
				for rest := s.GetValidationContext().GetCrl().GetInlineBytes(); ; {
					var b *pem.Block
					if b, rest = pem.Decode(rest); b == nil {
						break
					}
					crl, err := x509.ParseRevocationList(b.Bytes)
					if err != nil {
						u.err = err
						continue
					}
					if s.Name == "ROOTCA" {
						u.crls++
					}
					for _, e := range crl.RevokedCertificateEntries {
						u.revoked[fmt.Sprintf("%032x", e.SerialNumber)] = true
					}
				}
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "ROOTCA"}, TypeUrl: sdsSecretType,
				VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil && ctx.Err() == nil {
				u.err = err
			}
			select {
			case out <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// crlLists fetches the CRL of keyID from the diag listener and says
// whether it lists serial.
func crlLists(ctx context.Context, diag, keyID string, serial *big.Int) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+diag+"/crl/"+keyID+".crl", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET /crl/%s.crl: %s %v", keyID, resp.Status, err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return false, err
	}
	return lists(crl, serial), nil
}

// The figure of issue 20: a revocation (the RevokeX509SVID call, made when
// the clock starts) to the CRL served on the diag listener listing the
// serial (polled every 5ms), and to an Envoy-style SDS client whose
// validation context's CRL lists it, 20 revocations a second apart. Run by
// make bench (WID_BENCH=1).
func TestRevocationLatency(t *testing.T) {
	if os.Getenv("WID_BENCH") == "" {
		t.Skip("a measurement: run with WID_BENCH=1 (make bench)")
	}
	auth := startAgent(t, newDataDir(t), "--roles", "auth", "--diag-addr", "127.0.0.1:0")
	tok := tokenFrom(t, auth.widctl("bot", "add", "edge", "--roles", "local-agent").must(t))
	auth.widctl("workload-identity", "create", "web", "--spiffe-id", "/svc/web", "--rule", "workload.unix.uid="+uid).must(t)
	ag := startAgent(t, newDataDir(t), "--roles", "agent", "--auth", auth.addr, "--join-token", tok, "--ca-pin", auth.pin)
	admin := auth.admin()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	updates := watchSDS(ctx, t, ag.workload)
	// next returns the next push that satisfies ok, within 20s.
	next := func(what string, ok func(sdsUpdate) bool) sdsUpdate {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case u, open := <-updates:
				if !open || u.err != nil {
					t.Fatalf("the SDS stream failed waiting for %s: %v", what, u.err)
				}
				if ok(u) {
					return u
				}
			case <-deadline:
				t.Fatalf("no SDS push brought %s within 20s; agent log:\n%s", what, ag.out)
			}
		}
	}
	cur := next("the first SVID", func(u sdsUpdate) bool { return u.leaf != nil }).leaf

	const n = 20
	var toCRL, toSDS []time.Duration
	for i := range n {
		if i > 0 {
			// Pacing, not waiting for a condition: rounds a second apart
			// measure single revocations. Back to back, each round's pushes
			// (the CRL, then the re-issued SVID) trip the auth service's
			// burst limit for agent streams, which holds the next push
			// 250ms.
			time.Sleep(1100 * time.Millisecond)
		}
		serial := fmt.Sprintf("%032x", cur.SerialNumber)
		keyID := hex.EncodeToString(cur.AuthorityKeyId)
		served := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			for ctx.Err() == nil {
				if ok, err := crlLists(ctx, auth.diag, keyID, cur.SerialNumber); err == nil && ok {
					served <- time.Since(start)
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		if _, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: serial, Reason: "bench"}); err != nil {
			t.Fatalf("revoking %s: %v", serial, err)
		}
		pushed := next("the CRL listing "+serial, func(u sdsUpdate) bool { return u.revoked[serial] })
		toSDS = append(toSDS, pushed.at.Sub(start))
		select {
		case d := <-served:
			toCRL = append(toCRL, d)
		case <-time.After(20 * time.Second):
			t.Fatalf("the diag listener's CRL never listed %s", serial)
		}
		// The agent re-issues the revoked SVID; the next round revokes that one.
		if pushed.leaf != nil && pushed.leaf.SerialNumber.Cmp(cur.SerialNumber) != 0 {
			cur = pushed.leaf
		} else {
			cur = next("a new SVID after revoking "+serial, func(u sdsUpdate) bool {
				return u.leaf != nil && u.leaf.SerialNumber.Cmp(cur.SerialNumber) != 0
			}).leaf
		}
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		t.Logf("%s: median %s, max %s (n=%d)", name, d[len(d)/2].Round(100*time.Microsecond), d[len(d)-1].Round(100*time.Microsecond), len(d))
	}
	report("revoke to CRL served (GET /crl/<key>.crl on the diag listener, polled every 5ms)", toCRL)
	report("revoke to SDS push (validation context's CRL lists the serial)", toSDS)
}
