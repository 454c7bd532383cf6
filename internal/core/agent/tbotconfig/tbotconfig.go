// Package tbotconfig reads an agent config file written in the shape of
// Teleport's tbot (version: v2, onboarding, services of type
// spiffe-workload-api) and translates it into widagent's own config keys.
// Every field wid cannot honour is refused by its path, so that a file
// never half-applies; nothing here starts or reads anything else.
package tbotconfig

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// secureKubeletPort is the kubelet's authenticated port, tbot's default.
const secureKubeletPort = "10250"

// MaxFileBytes bounds a config file.
const MaxFileBytes = 1 << 20

// Is reports whether data is a config file in tbot's shape: a version: v2
// document with onboarding or services.
func Is(data []byte) bool {
	var top map[string]any
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	_, onb := top["onboarding"]
	_, svc := top["services"]
	return top["version"] == "v2" && (onb || svc)
}

// Env is what the translation may read from the environment.
type Env struct {
	// NodeName is the node the agent runs on (WID_NODE_NAME), whose
	// kubelet's secure port the kubernetes attestor asks.
	NodeName string
	// TeleportNodeName is tbot's TELEPORT_NODE_NAME, taken when NodeName
	// is empty.
	TeleportNodeName string
}

// EnvFromOS reads Env from the process's environment.
func EnvFromOS() Env {
	return Env{NodeName: os.Getenv("WID_NODE_NAME"), TeleportNodeName: os.Getenv("TELEPORT_NODE_NAME")}
}

// kubeletHost is the host of the kubelet's secure port: the node's name,
// which its serving certificate names, else the local address.
func (e Env) kubeletHost() string {
	switch {
	case e.NodeName != "":
		return e.NodeName
	case e.TeleportNodeName != "":
		return e.TeleportNodeName
	}
	return "127.0.0.1"
}

// Translate turns a tbot-shaped config file into widagent's settings (the
// keys of its own config file). The agent runs alone (roles: [agent]).
func Translate(data []byte, env Env) (map[string]any, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("the config file is larger than %d bytes", MaxFileBytes)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("the config file is not YAML: %v", err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the config file is not a YAML mapping")
	}
	t := &translator{env: env, out: map[string]any{"roles": []any{"agent"}}}
	t.top(doc.Content[0])
	if t.err != nil {
		return nil, t.err
	}
	return t.out, nil
}

type translator struct {
	env Env
	out map[string]any
	err error
}

func (t *translator) fail(path, format string, args ...any) {
	if t.err == nil {
		t.err = fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...))
	}
}

// fields returns a mapping node's keys and values, refusing keys not in
// known with their path.
func (t *translator) fields(path string, n *yaml.Node, known ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		t.fail(path, "is not a mapping")
		return nil
	}
	out := map[string]*yaml.Node{}
	keyLine := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		p := k
		if path != "" {
			p = path + "." + k
		}
		if line, ok := keyLine[k]; ok {
			// A YAML decoder keeps the last of two equal keys, so that
			// {uid: 1000, uid: 0} would quietly mean uid 0.
			t.fail(p, "is given twice (lines %d and %d): keep one", line, n.Content[i].Line)
			return nil
		}
		keyLine[k] = n.Content[i].Line
		if !slices.Contains(known, k) {
			sort.Strings(known)
			t.fail(p, "wid does not support this tbot field (line %d): remove it; %s takes %s", n.Content[i].Line, orTop(path), strings.Join(known, ", "))
			return nil
		}
		out[k] = n.Content[i+1]
	}
	return out
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

func (t *translator) str(path string, n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		t.fail(path, "is not a string")
		return ""
	}
	return n.Value
}

func (t *translator) boolean(path string, n *yaml.Node) bool {
	b, err := strconv.ParseBool(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		t.fail(path, "is not true or false")
	}
	return b
}

func (t *translator) top(n *yaml.Node) {
	f := t.fields("", n, "version", "auth_server", "proxy_server", "onboarding", "storage", "services", "debug", "certificate_ttl", "renewal_interval", "oneshot", "outputs")
	if t.err != nil {
		return
	}
	if v, ok := f["version"]; !ok || v.Value != "v2" {
		t.fail("version", "must be v2, the tbot config version this shape follows")
	}
	for _, k := range []string{"certificate_ttl", "renewal_interval", "oneshot", "outputs"} {
		if _, ok := f[k]; ok {
			t.fail(k, "wid does not support this tbot field: the agent renews its identity and SVIDs itself at half their life, and writes files with its own outputs key")
		}
	}
	if _, ok := f["proxy_server"]; ok {
		t.fail("proxy_server", "wid has no proxy: use auth_server: HOST:PORT of the auth service")
	}
	if v, ok := f["auth_server"]; ok {
		t.out["auth"] = t.str("auth_server", v)
	}
	if v, ok := f["debug"]; ok && t.boolean("debug", v) {
		t.out["log_level"] = "debug"
	}
	if v, ok := f["onboarding"]; ok {
		t.onboarding(v)
	}
	if v, ok := f["storage"]; ok {
		t.storage(v)
	}
	if v, ok := f["services"]; ok {
		t.services(v)
	}
}

func (t *translator) onboarding(n *yaml.Node) {
	f := t.fields("onboarding", n, "join_method", "token", "ca_pins", "ca_path")
	if t.err != nil {
		return
	}
	if v, ok := f["join_method"]; ok {
		switch m := t.str("onboarding.join_method", v); m {
		case "token", "kubernetes":
			t.out["join_method"] = m
		default:
			t.fail("onboarding.join_method", "%q is not a join method wid has: use token or kubernetes (or wid's own x509pop with its --cert and --key)", m)
		}
	}
	if v, ok := f["token"]; ok {
		t.out["join_token"] = t.str("onboarding.token", v)
	}
	if _, ok := f["ca_path"]; ok {
		t.fail("onboarding.ca_path", "wid pins the auth service's CA instead: use ca_pins with the pin widagent start printed")
	}
	if v, ok := f["ca_pins"]; ok {
		if v.Kind != yaml.SequenceNode || len(v.Content) != 1 {
			t.fail("onboarding.ca_pins", "must list exactly one pin: wid's auth service has one CA pin")
			return
		}
		t.out["ca_pin"] = t.str("onboarding.ca_pins[1]", v.Content[0])
	}
}

func (t *translator) storage(n *yaml.Node) {
	f := t.fields("storage", n, "type", "path")
	if t.err != nil {
		return
	}
	if typ, ok := f["type"]; ok && typ.Value != "directory" {
		t.fail("storage.type", "%q: wid keeps the agent's identity in a directory: use type: directory with path", typ.Value)
		return
	}
	if v, ok := f["path"]; ok {
		t.out["data_dir"] = t.str("storage.path", v)
	}
}

func (t *translator) services(n *yaml.Node) {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		t.fail("services", "must list at least one service")
		return
	}
	var list []any
	for i, s := range n.Content {
		path := fmt.Sprintf("services[%d]", i+1)
		svc := t.service(path, s)
		if t.err != nil {
			return
		}
		list = append(list, svc)
	}
	first := list[0].(map[string]any)
	// The first service is the agent's own socket, attestors and svids;
	// the others are served beside it, each on its own socket.
	for k, v := range first {
		t.out[k] = v
	}
	if len(list) > 1 {
		var more []any
		for _, s := range list[1:] {
			sm := s.(map[string]any)
			more = append(more, map[string]any{"listen": sm["workload_socket"], "svids": sm["svids"]})
			if _, ok := sm["attestors"]; ok {
				t.fail("services", "only the first spiffe-workload-api service may configure attestors: the agent attests each caller once, whatever socket it calls")
				return
			}
		}
		t.out["extra_workload_apis"] = more
	}
}

func (t *translator) service(path string, n *yaml.Node) map[string]any {
	f := t.fields(path, n, "type", "listen", "attestors", "svids")
	if t.err != nil {
		return nil
	}
	out := map[string]any{}
	if typ, ok := f["type"]; !ok || typ.Value != "spiffe-workload-api" {
		v := ""
		if ok {
			v = typ.Value
		}
		t.fail(path+".type", "%q: wid serves only services of type spiffe-workload-api", v)
		return nil
	}
	listen, ok := f["listen"]
	if !ok {
		t.fail(path+".listen", "is missing: give unix:///PATH of the socket")
		return nil
	}
	sock, found := strings.CutPrefix(t.str(path+".listen", listen), "unix://")
	if !found || sock == "" {
		t.fail(path+".listen", "%q is not unix:///PATH: wid serves the Workload API on a unix socket only", listen.Value)
		return nil
	}
	out["workload_socket"] = sock
	if v, ok := f["attestors"]; ok {
		out["attestors"] = t.attestors(path+".attestors", v)
	}
	if v, ok := f["svids"]; ok {
		out["svids"] = t.svids(path+".svids", v)
	}
	return out
}

func (t *translator) attestors(path string, n *yaml.Node) map[string]any {
	f := t.fields(path, n, "kubernetes", "unix")
	if t.err != nil {
		return nil
	}
	out := map[string]any{}
	if v, ok := f["unix"]; ok {
		u := t.fields(path+".unix", v, "enabled")
		if e, ok := u["enabled"]; ok {
			out["unix"] = map[string]any{"enabled": t.boolean(path+".unix.enabled", e)}
		}
	}
	if v, ok := f["kubernetes"]; ok {
		kp := path + ".kubernetes"
		k := t.fields(kp, v, "enabled", "kubelet")
		if t.err != nil {
			return nil
		}
		ko := map[string]any{}
		if e, ok := k["enabled"]; ok {
			ko["enabled"] = t.boolean(kp+".enabled", e)
			if ko["enabled"] == true {
				// tbot's default, with or without a kubelet block: the
				// secure port over verified TLS, never wid's own default
				// of the plaintext read-only port.
				ko["kubelet_url"] = "https://" + net.JoinHostPort(t.env.kubeletHost(), secureKubeletPort)
			}
		}
		if kl, ok := k["kubelet"]; ok {
			kk := t.fields(kp+".kubelet", kl, "skip_verify", "secure_port", "read_only_port", "token_path", "ca_path", "anonymous")
			if t.err != nil {
				return nil
			}
			if v, ok := kk["skip_verify"]; ok {
				ko["skip_verify"] = t.boolean(kp+".kubelet.skip_verify", v)
			}
			if v, ok := kk["anonymous"]; ok && t.boolean(kp+".kubelet.anonymous", v) {
				t.fail(kp+".kubelet.anonymous", "wid always authenticates to the kubelet's secure port with a token: remove anonymous, or use read_only_port")
			}
			if v, ok := kk["token_path"]; ok {
				ko["token_file"] = t.str(kp+".kubelet.token_path", v)
			}
			if v, ok := kk["ca_path"]; ok {
				ko["ca_file"] = t.str(kp+".kubelet.ca_path", v)
			}
			_, secure := kk["secure_port"]
			_, readOnly := kk["read_only_port"]
			switch {
			case secure && readOnly:
				t.fail(kp+".kubelet", "gives both secure_port and read_only_port: keep one")
			case secure:
				port := t.port(kp+".kubelet.secure_port", kk["secure_port"])
				ko["kubelet_url"] = "https://" + net.JoinHostPort(t.env.kubeletHost(), port)
			case readOnly:
				ko["kubelet_url"] = "http://" + net.JoinHostPort("127.0.0.1", t.port(kp+".kubelet.read_only_port", kk["read_only_port"]))
			default:
				// tbot's default is the secure port of the node.
				ko["kubelet_url"] = "https://" + net.JoinHostPort(t.env.kubeletHost(), secureKubeletPort)
			}
		}
		out["kubernetes"] = ko
	}
	return out
}

func (t *translator) port(path string, n *yaml.Node) string {
	p, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || p < 1 || p > 65535 {
		t.fail(path, "%q is not a port number", n.Value)
	}
	return strconv.Itoa(p)
}

func (t *translator) svids(path string, n *yaml.Node) []any {
	if n.Kind != yaml.SequenceNode {
		t.fail(path, "is not a list")
		return nil
	}
	var out []any
	for i, s := range n.Content {
		sp := fmt.Sprintf("%s[%d]", path, i+1)
		f := t.fields(sp, s, "path", "hint", "sans", "rules")
		if t.err != nil {
			return nil
		}
		svid := map[string]any{}
		if v, ok := f["path"]; ok {
			svid["path"] = t.str(sp+".path", v)
		}
		if v, ok := f["hint"]; ok {
			svid["hint"] = t.str(sp+".hint", v)
		}
		if v, ok := f["sans"]; ok {
			sans := t.fields(sp+".sans", v, "dns", "ip")
			if _, ok := sans["ip"]; ok {
				t.fail(sp+".sans.ip", "wid's agent config SVIDs take DNS SANs only: give IP SANs in a workload identity")
			}
			if d, ok := sans["dns"]; ok {
				svid["dns_sans"] = t.strings(sp+".sans.dns", d)
			}
		}
		if v, ok := f["rules"]; ok {
			svid["rules"] = t.rules(sp+".rules", v)
		}
		out = append(out, svid)
	}
	return out
}

func (t *translator) strings(path string, n *yaml.Node) []any {
	if n.Kind != yaml.SequenceNode {
		t.fail(path, "is not a list")
		return nil
	}
	var out []any
	for i, s := range n.Content {
		out = append(out, t.str(fmt.Sprintf("%s[%d]", path, i+1), s))
	}
	return out
}

// rules turns tbot's rules (each a set of unix and kubernetes selectors,
// all of which must match) into wid's (each a list of conditions).
func (t *translator) rules(path string, n *yaml.Node) []any {
	if n.Kind != yaml.SequenceNode {
		t.fail(path, "is not a list")
		return nil
	}
	var out []any
	for i, r := range n.Content {
		rp := fmt.Sprintf("%s[%d]", path, i+1)
		f := t.fields(rp, r, "unix", "kubernetes")
		if t.err != nil {
			return nil
		}
		var conds []any
		add := func(section string, attrs map[string]string) {
			v, ok := f[section]
			if !ok {
				return
			}
			keys := make([]string, 0, len(attrs))
			for k := range attrs {
				keys = append(keys, k)
			}
			sel := t.fields(rp+"."+section, v, keys...)
			sort.Strings(keys)
			for _, k := range keys {
				if s, ok := sel[k]; ok {
					conds = append(conds, map[string]any{"attribute": attrs[k], "eq": t.str(rp+"."+section+"."+k, s)})
				}
			}
		}
		add("unix", map[string]string{"pid": "workload.unix.pid", "uid": "workload.unix.uid", "gid": "workload.unix.gid"})
		add("kubernetes", map[string]string{"namespace": "workload.kubernetes.namespace", "service_account": "workload.kubernetes.service_account", "pod_name": "workload.kubernetes.pod_name"})
		if len(conds) == 0 && t.err == nil {
			t.fail(rp, "selects nothing: give unix or kubernetes selectors")
		}
		out = append(out, map[string]any{"conditions": conds})
	}
	return out
}
