package agent

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FuzzDiscoveryRequest: whatever bytes a client sends as a DiscoveryRequest,
// the agent's checks never panic, refuse only with InvalidArgument and a
// sentence, and what they accept is within the bounds the handler relies on.
func FuzzDiscoveryRequest(f *testing.F) {
	for _, r := range []*discoveryv3.DiscoveryRequest{
		{TypeUrl: secretTypeURL, ResourceNames: []string{"default", "spiffe://example.org"}, Node: &corev3.Node{Id: "envoy"}},
		{ResponseNonce: "abc", VersionInfo: "1", ResourceNames: []string{"ROOTCA", "ALL", ""}},
		{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req discoveryv3.DiscoveryRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		err := checkDiscoveryRequest(&req)
		if err != nil {
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || st.Message() == "" || strings.ToLower(st.Message()[:1]) != st.Message()[:1] {
				t.Fatalf("refusal %v is not an InvalidArgument sentence", err)
			}
			return
		}
		if len(req.ResourceNames) > maxSDSNames || (req.TypeUrl != "" && req.TypeUrl != secretTypeURL) {
			t.Fatalf("accepted %d names of type %q", len(req.ResourceNames), req.TypeUrl)
		}
		for _, n := range req.ResourceNames {
			if len(n) > maxSDSNameLength {
				t.Fatalf("accepted a %d-byte name", len(n))
			}
		}
		names := req.ResourceNames
		rev := slices.Clone(names)
		slices.Reverse(rev)
		if !sameNames(names, rev) || !sameNames(names, append(slices.Clone(names), names...)) {
			t.Fatalf("the same set of names in another order or repeated is a new subscription: %q", names)
		}
	})
}
