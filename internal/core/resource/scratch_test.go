package resource

import (
	"fmt"
	"testing"
)

func TestScratch(t *testing.T) {
	in := `kind: role
version: v1
metadata:
  name: europe-foo-svid-issuer
spec:
  allow:
    spiffe:
      - path: /region/europe/svc/foo
        dns_sans: ["foo.example.com"]
        ip_sans: ["10.0.0.0/8"]
  deny:
    spiffe:
      - path: /region/europe/svc/foo/admin
  options:
    max_svid_ttl: 24h
---
kind: role
version: v1
metadata: {name: x}
spec:
  alow: {}
---
kind: workload_identity
version: v1
metadata:
  name: web
  labels: {env: prod}
spec:
  spiffe:
    id: /svc/web/{{ workload.kubernetes.namespace }}
    hint: web
  x509: {dns_sans: [web.internal], ttl: 1h}
  jwt: {ttl: 5m}
  rules:
    allow:
      - conditions:
          - attribute: workload.unix.uid
            eq: "1000"
---
kind: role
version: v1
metadata: {name: y}
spec:
  allow:
    spiffe:
      - path: /svc//x
`
	rs, err := Decode([]byte(in))
	fmt.Println(rs, err)
	rs, err = Decode([]byte(in[:302]))
	fmt.Println(err)
	for _, r := range rs {
		b, _ := MarshalYAML(r)
		fmt.Println(string(b))
		b, _ = MarshalJSON(r)
		fmt.Println(string(b))
	}
}
