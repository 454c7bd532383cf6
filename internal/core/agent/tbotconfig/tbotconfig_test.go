package tbotconfig_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/agent/tbotconfig"
)

const seed = `version: v2
auth_server: auth.example.com:3025
onboarding:
  join_method: kubernetes
  token: k8s-nodes
  ca_pins: ["sha256:abcd"]
storage:
  type: directory
  path: /var/lib/wid
services:
  - type: spiffe-workload-api
    listen: unix:///run/wid/workload.sock
    attestors:
      kubernetes:
        enabled: true
        kubelet:
          skip_verify: true
    svids:
      - path: /svc/foo
        hint: foo
        rules:
          - kubernetes:
              namespace: shop
              service_account: foo
  - type: spiffe-workload-api
    listen: unix:///run/wid/other.sock
    svids:
      - path: /svc/bar
        sans: {dns: [bar.internal]}
        rules:
          - unix: {uid: 1000}
`

func TestTranslate(t *testing.T) {
	if !tbotconfig.Is([]byte(seed)) || tbotconfig.Is([]byte("data_dir: /x\n")) || tbotconfig.Is([]byte("version: v2\n")) {
		t.Fatal("Is does not tell tbot's shape from widagent's")
	}
	got, err := tbotconfig.Translate([]byte(seed), tbotconfig.Env{NodeName: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"roles": []any{"agent"}, "auth": "auth.example.com:3025", "join_method": "kubernetes", "join_token": "k8s-nodes",
		"ca_pin": "sha256:abcd", "data_dir": "/var/lib/wid", "workload_socket": "/run/wid/workload.sock",
		"attestors": map[string]any{"kubernetes": map[string]any{"enabled": true, "skip_verify": true, "kubelet_url": "https://node-1:10250"}},
		"svids": []any{map[string]any{"path": "/svc/foo", "hint": "foo", "rules": []any{map[string]any{"conditions": []any{
			map[string]any{"attribute": "workload.kubernetes.namespace", "eq": "shop"},
			map[string]any{"attribute": "workload.kubernetes.service_account", "eq": "foo"},
		}}}}},
		"extra_workload_apis": []any{map[string]any{"listen": "/run/wid/other.sock", "svids": []any{map[string]any{
			"path": "/svc/bar", "dns_sans": []any{"bar.internal"},
			"rules": []any{map[string]any{"conditions": []any{map[string]any{"attribute": "workload.unix.uid", "eq": "1000"}}}},
		}}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Translate =\n%#v\nwant\n%#v", got, want)
	}
}

// TestTranslateRefuses: every field wid cannot honour is refused with its
// path.
func TestTranslateRefuses(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"version: v2\nonboarding: {join_method: iam, token: x}\n", `onboarding.join_method: "iam" is not a join method wid has`},
		{"version: v2\nonboarding: {token: x, bound_keypair: {}}\n", "onboarding.bound_keypair: wid does not support this tbot field"},
		{"version: v2\nproxy_server: p:443\nonboarding: {token: x}\n", "proxy_server: wid has no proxy"},
		{"version: v2\nservices: [{type: application-tunnel, listen: tcp://x}]\n", `services[1].type: "application-tunnel": wid serves only services of type spiffe-workload-api`},
		{"version: v2\nservices: [{type: spiffe-workload-api, listen: tcp://0.0.0.0:1}]\n", `services[1].listen: "tcp://0.0.0.0:1" is not unix:///PATH`},
		{"version: v2\nservices: [{type: spiffe-workload-api, listen: unix:///s, svids: [{path: /a, rules: [{unix: {uid: 1}, docker: {}}]}]}]\n", "services[1].svids[1].rules[1].docker: wid does not support this tbot field"},
		{"version: v2\nservices: [{type: spiffe-workload-api, listen: unix:///s, attestors: {kubernetes: {kubelet: {anonymous: true}}}}]\n", "services[1].attestors.kubernetes.kubelet.anonymous"},
		{"version: v2\nservices: [{type: spiffe-workload-api, listen: unix:///s, svids: [{path: /a, sans: {ip: [10.0.0.1]}}]}]\n", "services[1].svids[1].sans.ip"},
		{"version: v2\nstorage: {type: memory}\nonboarding: {token: x}\n", `storage.type: "memory"`},
		{"version: v2\nonboarding: {token: x}\ncertificate_ttl: 1h\n", "certificate_ttl: wid does not support this tbot field"},
		{"version: v2\nservices: [{type: spiffe-workload-api, listen: unix:///s, svids: [{path: /a, rules: [{unix: {uid: 1000, uid: 0}}]}]}]\n", "services[1].svids[1].rules[1].unix.uid: is given twice (lines 2 and 2): keep one"},
		{"version: v2\nonboarding: {token: x}\nonboarding: {token: y}\n", "onboarding: is given twice (lines 2 and 3)"},
	} {
		_, err := tbotconfig.Translate([]byte(tt.yaml), tbotconfig.Env{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Translate(%q) = %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

// TestTranslateKubeletSecureByDefault: with the kubernetes attestor on and
// no kubelet block, the agent asks the kubelet's secure port over verified
// TLS as tbot does, never the plaintext read-only port.
func TestTranslateKubeletSecureByDefault(t *testing.T) {
	const doc = "version: v2\nservices: [{type: spiffe-workload-api, listen: unix:///s, attestors: {kubernetes: {enabled: true}}}]\n"
	for _, tt := range []struct {
		env  tbotconfig.Env
		want string
	}{
		{tbotconfig.Env{}, "https://127.0.0.1:10250"},
		{tbotconfig.Env{TeleportNodeName: "node-2"}, "https://node-2:10250"},
		{tbotconfig.Env{NodeName: "node-1", TeleportNodeName: "node-2"}, "https://node-1:10250"},
	} {
		got, err := tbotconfig.Translate([]byte(doc), tt.env)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"enabled": true, "kubelet_url": tt.want}
		if k := got["attestors"].(map[string]any)["kubernetes"]; !reflect.DeepEqual(k, want) {
			t.Errorf("with %+v the kubernetes attestor is %#v, want %#v", tt.env, k, want)
		}
	}
}
