package resource

import (
	"reflect"
	"testing"
)

// UnmarshalStored must read what the auth service stores exactly as
// Unmarshal does, and refuse what Unmarshal refuses with its message.
func TestUnmarshalStoredMatchesUnmarshal(t *testing.T) {
	docs := []string{
		`{"kind":"workload_identity","version":"v1","metadata":{"name":"web","labels":{"env":"prod"},"description":"d"},"spec":{"spiffe":{"id":"/svc/web/{{ workload.unix.uid }}","hint":"web"},"x509":{"dns_sans":["web.internal"],"ttl":"1h"},"jwt":{"ttl":"5m"},"rules":{"allow":[{"conditions":[{"attribute":"workload.unix.uid","eq":"1000"}]}]}}}`,
		`{"kind":"role","version":"v1","metadata":{"name":"r"},"spec":{"allow":{"spiffe":[{"path":"/svc/*","dns_sans":["a.example"]}]},"deny":{"spiffe":[{"path":"/svc/admin"}]},"options":{"max_svid_ttl":"4h"}}}`,
		`{"kind":"bot","version":"v1","metadata":{"name":"b"},"spec":{"roles":["r"]}}`,
	}
	for _, d := range docs {
		want, err := Unmarshal([]byte(d))
		if err != nil {
			t.Fatalf("Unmarshal(%s): %v", d, err)
		}
		got, err := UnmarshalStored([]byte(d))
		if err != nil {
			t.Fatalf("UnmarshalStored(%s): %v", d, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("UnmarshalStored(%s) =\n%#v\nUnmarshal =\n%#v", d, got, want)
		}
	}
	for _, bad := range []string{
		`{"kind": garbage`,
		`{"kind":"role","version":"v1","metadata":{"name":"r"},"spec":{"allow":{}},"extra":1}`,
		`{"kind":"role","version":"v1","metadata":{"name":""},"spec":{}}`,
	} {
		_, want := Unmarshal([]byte(bad))
		_, got := UnmarshalStored([]byte(bad))
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Fatalf("for %s: UnmarshalStored error %v, Unmarshal error %v", bad, got, want)
		}
	}
}
