package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestEnvoySDSFromWidagent: widagent start with an sds section in its
// config file and --sds-spiffe-validator serves an Envoy-style client the
// dev identity's SVID under the configured name and the bundle as Envoy's
// SPIFFE validator, on the Workload API socket, with no header.
func TestEnvoySDSFromWidagent(t *testing.T) {
	t.Parallel()
	dir := newDataDir(t)
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("sds:\n  default_svid_name: envoy-svid\n  default_bundle_name: td-bundle\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, dir, "--config", cfg, "--sds-spiffe-validator")
	conn, err := grpc.NewClient("unix://"+a.workload, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	if err := st.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"envoy-svid", "td-bundle"}, TypeUrl: secretType}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("StreamSecrets from widagent: %v", err)
	}
	got := map[string]*tlsv3.Secret{}
	for _, r := range resp.Resources {
		var s tlsv3.Secret
		if err := r.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		got[s.Name] = &s
	}
	if len(got) != 2 || resp.VersionInfo == "" || resp.Nonce == "" {
		t.Fatalf("widagent served %d secrets, version %q, nonce %q", len(got), resp.VersionInfo, resp.Nonce)
	}
	tc := got["envoy-svid"].GetTlsCertificate()
	svid, err := x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("envoy-svid is not an X509-SVID: %v", err)
	}
	if want := "spiffe://" + a.td + "/uid/" + strconv.Itoa(os.Getuid()); svid.ID.String() != want {
		t.Fatalf("envoy-svid is %s, want the dev identity %s", svid.ID, want)
	}
	cv := got["td-bundle"].GetValidationContext().GetCustomValidatorConfig()
	var vc tlsv3.SPIFFECertValidatorConfig
	if cv.GetName() != "envoy.tls.cert_validator.spiffe" || cv.GetTypedConfig().UnmarshalTo(&vc) != nil || len(vc.TrustDomains) != 1 {
		t.Fatalf("td-bundle is not a SPIFFE validator config for one trust domain: %v", got["td-bundle"])
	}
	td := spiffeid.RequireTrustDomainFromString(vc.TrustDomains[0].Name)
	bundle, err := x509bundle.Parse(td, vc.TrustDomains[0].GetTrustBundle().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("the SVID does not verify against the served validator bundle: %v", err)
	}
}
