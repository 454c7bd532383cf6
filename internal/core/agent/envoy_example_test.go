package agent_test

import (
	"encoding/json"
	"os"
	"slices"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

const exampleBootstrap = "../../../examples/envoy/envoy.yaml"

// loadBootstrap reads an Envoy bootstrap YAML as Envoy does: YAML to JSON,
// then proto3 JSON into the v3 Bootstrap (unknown fields and unknown
// typed_config types are errors), then Envoy's own field constraints.
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s is not YAML: %v", path, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s does not convert to JSON: %v", path, err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("%s is not an Envoy v3 bootstrap: %v", path, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s breaks Envoy's constraints: %v", path, err)
	}
	return &b
}

// walk visits every message in m, unpacking typed_config Anys (and
// checking Envoy's constraints on what they hold, which ValidateAll on the
// outer message does not reach).
func walk(t *testing.T, m protoreflect.Message, visit func(proto.Message)) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("typed_config %s: %v", a.TypeUrl, err)
		}
		if v, ok := inner.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				t.Fatalf("typed_config %s breaks Envoy's constraints: %v", a.TypeUrl, err)
			}
		}
		walk(t, inner.ProtoReflect(), visit)
		return
	}
	visit(m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				walk(t, v.List().Get(i).Message(), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(t, mv.Message(), visit)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walk(t, v.Message(), visit)
		}
		return true
	})
}

// TestEnvoyExample: examples/envoy/envoy.yaml is a valid Envoy bootstrap
// whose SDS secrets all come from the cluster wid_agent, a unix socket
// spoken to in HTTP/2, and every secret it names is served by the agent to
// a process entitled to an identity.
func TestEnvoyExample(t *testing.T) {
	b := loadBootstrap(t, exampleBootstrap)

	var agentCluster *clusterv3.Cluster
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.Name == "wid_agent" {
			agentCluster = c
		}
	}
	if agentCluster == nil {
		t.Fatal("no static cluster wid_agent")
	}
	eps := agentCluster.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].LbEndpoints) != 1 || eps[0].LbEndpoints[0].GetEndpoint().GetAddress().GetPipe().GetPath() == "" {
		t.Fatal("cluster wid_agent does not point at a unix socket (pipe address)")
	}
	var opts httpv3.HttpProtocolOptions
	if err := agentCluster.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Fatalf("cluster wid_agent does not speak HTTP/2 (gRPC needs it): %v", err)
	}

	var names []string
	var tlsCerts, validations int
	walk(t, b.ProtoReflect(), func(m proto.Message) {
		switch x := m.(type) {
		case *tlsv3.SdsSecretConfig:
			src := x.GetSdsConfig().GetApiConfigSource()
			if src.GetApiType() != corev3.ApiConfigSource_GRPC || src.GetTransportApiVersion() != corev3.ApiVersion_V3 ||
				len(src.GetGrpcServices()) != 1 || src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "wid_agent" {
				t.Errorf("secret %s is not fetched over SDS v3 gRPC from wid_agent", x.Name)
			}
			if !slices.Contains(names, x.Name) {
				names = append(names, x.Name)
			}
		case *tlsv3.CommonTlsContext:
			tlsCerts += len(x.TlsCertificateSdsSecretConfigs)
			if x.GetCombinedValidationContext().GetValidationContextSdsSecretConfig() != nil {
				validations++
			}
		}
	})
	if tlsCerts != 2 || validations != 2 {
		t.Fatalf("the example has %d SDS certificates and %d SDS validation contexts, want 2 and 2 (listener and upstream)", tlsCerts, validations)
	}

	e := start(t)
	e.create(t, identity("envoy", "/envoy/{{ workload.unix.uid }}", "", eq("workload.unix.uid", uid)))
	ctx := ctxT(t, 20*time.Second)
	resp, err := sdsClient(t, e).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{Node: envoyNode, ResourceNames: names, TypeUrl: secretType})
	if err != nil {
		t.Fatal(err)
	}
	got := secretsOf(t, resp)
	for _, n := range names {
		if got[n] == nil {
			t.Errorf("the example names secret %s, which the agent does not serve", n)
		}
	}
	// And each arrives on a stream of its own, as Envoy asks for them.
	c := sdsClient(t, e)
	for _, n := range names {
		s := openSDS(t, ctx, c, n)
		if r := secretsOf(t, s.next(5*time.Second)); r[n] == nil {
			t.Errorf("a stream for %s got %v", n, keys(r))
		}
	}
}
