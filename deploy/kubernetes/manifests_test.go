// Package kubernetes_test keeps deploy/kubernetes valid: every manifest
// decodes strictly into its Kubernetes API type, and the pieces agree with
// each other and with what wid expects (service accounts, volumes, the
// projected token's audience, the socket path, the join token).
package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/agentcmd"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/resource"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const namespace = "wid"

// objects are the decoded manifests, by kind and name.
type objects struct {
	namespaces          map[string]*corev1.Namespace
	serviceAccounts     map[string]*corev1.ServiceAccount
	services            map[string]*corev1.Service
	configMaps          map[string]*corev1.ConfigMap
	statefulSets        map[string]*appsv1.StatefulSet
	daemonSets          map[string]*appsv1.DaemonSet
	clusterRoles        map[string]*rbacv1.ClusterRole
	clusterRoleBindings map[string]*rbacv1.ClusterRoleBinding
}

// strictDecode decodes YAML as the API server does with strict field
// validation: field names match case-sensitively, and unknown or repeated
// fields are errors.
func strictDecode(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// add files a decoded object under its name and returns its metadata.
func (o *objects) add(obj any) *metav1.ObjectMeta {
	switch v := obj.(type) {
	case *corev1.Namespace:
		o.namespaces[v.Name] = v
		return &v.ObjectMeta
	case *corev1.ServiceAccount:
		o.serviceAccounts[v.Name] = v
		return &v.ObjectMeta
	case *corev1.Service:
		o.services[v.Name] = v
		return &v.ObjectMeta
	case *corev1.ConfigMap:
		o.configMaps[v.Name] = v
		return &v.ObjectMeta
	case *appsv1.StatefulSet:
		o.statefulSets[v.Name] = v
		return &v.ObjectMeta
	case *appsv1.DaemonSet:
		o.daemonSets[v.Name] = v
		return &v.ObjectMeta
	case *rbacv1.ClusterRole:
		o.clusterRoles[v.Name] = v
		return &v.ObjectMeta
	case *rbacv1.ClusterRoleBinding:
		o.clusterRoleBindings[v.Name] = v
		return &v.ObjectMeta
	}
	panic(fmt.Sprintf("unhandled %T", obj))
}

// documents splits a YAML stream at its "---" lines, dropping empty ones.
func documents(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range bytes.Lines(data) {
		if strings.TrimRight(string(line), " \r\n") == "---" {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(b) {
		if !strings.HasPrefix(strings.TrimSpace(string(line)), "#") {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// decode reads every manifest of dir strictly: an unknown or misspelt field
// fails, as kubectl apply --validate=strict would.
func decode(t *testing.T, dir string) *objects {
	t.Helper()
	o := &objects{
		namespaces: map[string]*corev1.Namespace{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		statefulSets: map[string]*appsv1.StatefulSet{}, daemonSets: map[string]*appsv1.DaemonSet{},
		clusterRoles: map[string]*rbacv1.ClusterRole{}, clusterRoleBindings: map[string]*rbacv1.ClusterRoleBinding{},
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(data) {
			where := fmt.Sprintf("%s document %d", filepath.Base(f), i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Namespace":
				obj = &corev1.Namespace{}
			case "v1 ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "v1 Service":
				obj = &corev1.Service{}
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "apps/v1 StatefulSet":
				obj = &appsv1.StatefulSet{}
			case "apps/v1 DaemonSet":
				obj = &appsv1.DaemonSet{}
			case "rbac.authorization.k8s.io/v1 ClusterRole":
				obj = &rbacv1.ClusterRole{}
			case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
				obj = &rbacv1.ClusterRoleBinding{}
			default:
				t.Fatalf("%s: %s %s is a kind this test does not know: add it", where, tm.APIVersion, tm.Kind)
			}
			if err := strictDecode(doc, obj); err != nil {
				t.Fatalf("%s (%s): %v", where, tm.Kind, err)
			}
			meta := o.add(obj)
			if meta.Name == "" {
				t.Errorf("%s: %s has no name", where, tm.Kind)
			}
			clusterScoped := tm.Kind == "Namespace" || strings.HasPrefix(tm.Kind, "Cluster")
			if clusterScoped && meta.Namespace != "" {
				t.Errorf("%s: cluster-scoped %s %s has a namespace", where, tm.Kind, meta.Name)
			}
			if !clusterScoped && meta.Namespace != namespace {
				t.Errorf("%s: %s %s is in namespace %q, want %q", where, tm.Kind, meta.Name, meta.Namespace, namespace)
			}
		}
	}
	return o
}

// checkPod checks that a pod template's mounts and volumes match and that
// its service account exists.
func checkPod(t *testing.T, o *objects, owner string, pod *corev1.PodTemplateSpec, selector *metav1.LabelSelector, claims ...corev1.PersistentVolumeClaim) {
	t.Helper()
	if _, ok := o.serviceAccounts[pod.Spec.ServiceAccountName]; !ok {
		t.Errorf("%s runs as service account %q, which no manifest creates", owner, pod.Spec.ServiceAccountName)
	}
	for k, v := range selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("%s's selector %s=%s does not match its pod template's labels %v", owner, k, v, pod.Labels)
		}
	}
	volumes := map[string]bool{}
	for _, c := range claims {
		volumes[c.Name] = false
	}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = false
		if v.ConfigMap != nil {
			if _, ok := o.configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("%s's volume %s names ConfigMap %q, which no manifest creates", owner, v.Name, v.ConfigMap.Name)
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				t.Errorf("%s container %s mounts volume %q, which the pod does not have", owner, c.Name, m.Name)
			}
			volumes[m.Name] = true
		}
	}
	for name, used := range volumes {
		if !used {
			t.Errorf("%s has volume %q that no container mounts", owner, name)
		}
	}
}

// mountOf returns where container c mounts volume name.
func mountOf(c corev1.Container, name string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath
		}
	}
	return ""
}

func volumeOf(pod *corev1.PodTemplateSpec, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// flagValues returns the values of --name=VALUE or --name VALUE in args.
func flagValues(args []string, name string) []string {
	var out []string
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		} else if a == "--"+name && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestManifests(t *testing.T) {
	o := decode(t, ".")
	if _, ok := o.namespaces[namespace]; !ok {
		t.Fatalf("no manifest creates namespace %s", namespace)
	}

	// The auth service.
	auth := o.statefulSets["wid-auth"]
	if auth == nil {
		t.Fatal("no StatefulSet wid-auth")
	}
	checkPod(t, o, "StatefulSet wid-auth", &auth.Spec.Template, auth.Spec.Selector, auth.Spec.VolumeClaimTemplates...)
	if _, ok := o.services[auth.Spec.ServiceName]; !ok || o.services[auth.Spec.ServiceName].Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet wid-auth's serviceName %q is not a headless Service of the manifests", auth.Spec.ServiceName)
	}
	authC := auth.Spec.Template.Spec.Containers[0]
	args := append(slices.Clone(authC.Command), authC.Args...)
	tds := flagValues(args, "trust-domain")
	if len(tds) != 1 {
		t.Fatalf("the auth service's args %v do not set one --trust-domain", args)
	}
	td := tds[0]
	dataDirs := flagValues(args, "data-dir")
	if len(auth.Spec.VolumeClaimTemplates) != 1 || len(dataDirs) != 1 {
		t.Fatalf("the auth service needs one PVC and one --data-dir")
	}
	pvcMount := mountOf(authC, auth.Spec.VolumeClaimTemplates[0].Name)
	if pvcMount == "" || !strings.HasPrefix(dataDirs[0], pvcMount+"/") && dataDirs[0] != pvcMount {
		t.Errorf("--data-dir %s is not on the PVC mounted at %q", dataDirs[0], pvcMount)
	}
	_, listenPort, err := net.SplitHostPort(flagValues(args, "auth-listen")[0])
	if err != nil {
		t.Fatal(err)
	}
	if p := authC.Ports[0]; fmt.Sprint(p.ContainerPort) != listenPort {
		t.Errorf("container port %d is not --auth-listen's %s", p.ContainerPort, listenPort)
	}

	// The agent and its config.
	ds := o.daemonSets["wid-agent"]
	if ds == nil {
		t.Fatal("no DaemonSet wid-agent")
	}
	pod := &ds.Spec.Template
	checkPod(t, o, "DaemonSet wid-agent", pod, ds.Spec.Selector)
	if !pod.Spec.HostPID {
		t.Error("the agent needs hostPID to attest the node's processes")
	}
	if pod.Spec.HostNetwork && pod.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("on the host network the agent resolves the auth Service only with dnsPolicy %s, not %q", corev1.DNSClusterFirstWithHostNet, pod.Spec.DNSPolicy)
	}
	agentC := pod.Spec.Containers[0]
	configPaths := flagValues(agentC.Args, "config")
	if len(configPaths) != 1 {
		t.Fatalf("the agent's args %v do not name one --config", agentC.Args)
	}
	cmVol := volumeOf(pod, "config")
	if cmVol == nil || cmVol.ConfigMap == nil {
		t.Fatal("the agent has no config volume from a ConfigMap")
	}
	cm := o.configMaps[cmVol.ConfigMap.Name]
	key := path.Base(configPaths[0])
	if path.Dir(configPaths[0]) != mountOf(agentC, "config") || cm.Data[key] == "" {
		t.Fatalf("--config %s is not key %q of ConfigMap %s mounted at %s", configPaths[0], key, cm.Name, mountOf(agentC, "config"))
	}
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(cm.Data[key]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := agentcmd.LoadStartConfig(file)
	if err != nil {
		t.Fatalf("widagent refuses the ConfigMap's %s: %v", key, err)
	}
	if !slices.Equal(cfg.Roles, []string{"agent"}) || cfg.JoinMethod != "kubernetes" {
		t.Errorf("the agent config runs roles %v with join method %q, want an agent joining with kubernetes", cfg.Roles, cfg.JoinMethod)
	}

	// The kubernetes attestor: on, and able to reach the kubelet.
	k := cfg.Attestors.Kubernetes
	if !k.Enabled {
		t.Error("the agent's kubernetes attestor is off: pods would get no workload.kubernetes attributes")
	}
	if u, err := url.Parse(k.KubeletURL); err != nil || (isLoopback(u.Hostname()) && !pod.Spec.HostNetwork) {
		t.Errorf("kubelet_url %q is the pod's own loopback unless the agent runs on the host network", k.KubeletURL)
	}
	if !bound(o, pod.Spec.ServiceAccountName, "", "nodes/pods", "get") {
		t.Error("the agent's service account may not get nodes/pods, which fine-grained kubelet authorization asks for")
	}

	// The projected token: the audience the auth service expects, where
	// the agent reads it.
	var tokenSrc *corev1.ServiceAccountTokenProjection
	var tokenVol string
	for _, v := range pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				tokenSrc, tokenVol = s.ServiceAccountToken, v.Name
			}
		}
	}
	if tokenSrc == nil {
		t.Fatal("the agent has no projected service-account token")
	}
	if want := kubejoin.Audience(td); tokenSrc.Audience != want {
		t.Errorf("projected token audience %q, but the auth service of trust domain %s expects %q", tokenSrc.Audience, td, want)
	}
	if tokenSrc.ExpirationSeconds == nil || *tokenSrc.ExpirationSeconds < int64(kubejoin.MinLifetime.Seconds()) {
		t.Errorf("projected token expirationSeconds %v is under %v", tokenSrc.ExpirationSeconds, kubejoin.MinLifetime)
	}
	if got := path.Join(mountOf(agentC, tokenVol), tokenSrc.Path); got != cfg.SATokenFile {
		t.Errorf("the token is mounted at %s but the agent reads %s", got, cfg.SATokenFile)
	}
	if cfg.SATokenFile != kubejoin.DefaultTokenFile {
		t.Errorf("sa_token_file %s is not the documented default %s", cfg.SATokenFile, kubejoin.DefaultTokenFile)
	}

	// The socket: in a hostPath directory that workloads mount too.
	sockVol := volumeOf(pod, "workload-socket")
	if sockVol == nil || sockVol.HostPath == nil {
		t.Fatal("the workload socket's directory is not a hostPath volume")
	}
	sockDir := path.Dir(cfg.WorkloadSocket)
	if mountOf(agentC, "workload-socket") != sockDir || sockVol.HostPath.Path != sockDir {
		t.Errorf("workload_socket %s is not in the hostPath %s mounted at %s", cfg.WorkloadSocket, sockVol.HostPath.Path, mountOf(agentC, "workload-socket"))
	}
	if dataMount := mountOf(agentC, "data"); dataMount != cfg.DataDir {
		t.Errorf("the agent's data_dir %s is not its data volume (%s)", cfg.DataDir, dataMount)
	}

	// The agent reaches the auth service by its Service name, which the
	// auth service's certificate holds.
	host, port, err := net.SplitHostPort(cfg.Auth)
	if err != nil {
		t.Fatalf("auth %q: %v", cfg.Auth, err)
	}
	svcName, svcNS, _ := strings.Cut(strings.TrimSuffix(host, ".svc"), ".")
	svc := o.services[svcName]
	if svcNS != namespace || svc == nil {
		t.Fatalf("auth %s is not a Service of namespace %s", cfg.Auth, namespace)
	}
	if fmt.Sprint(svc.Spec.Ports[0].Port) != port {
		t.Errorf("Service %s serves port %d, the agent dials %s", svcName, svc.Spec.Ports[0].Port, port)
	}
	for k, v := range svc.Spec.Selector {
		if auth.Spec.Template.Labels[k] != v {
			t.Errorf("Service %s selects %s=%s, which the auth pods lack", svcName, k, v)
		}
	}
	if !slices.Contains(flagValues(args, "server-name"), host) {
		t.Errorf("the auth service's certificate names %v, not %s that agents dial", flagValues(args, "server-name"), host)
	}

	// RBAC: the agent may ask the kubelet; the auth service may review tokens.
	for _, b := range o.clusterRoleBindings {
		if b.RoleRef.Kind != "ClusterRole" {
			t.Errorf("ClusterRoleBinding %s binds a %s", b.Name, b.RoleRef.Kind)
		}
		if _, ok := o.clusterRoles[b.RoleRef.Name]; !ok && !strings.HasPrefix(b.RoleRef.Name, "system:") {
			t.Errorf("ClusterRoleBinding %s binds ClusterRole %s, which no manifest creates", b.Name, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			if s.Kind != "ServiceAccount" || s.Namespace != namespace || o.serviceAccounts[s.Name] == nil {
				t.Errorf("ClusterRoleBinding %s binds %s %s/%s, which no manifest creates", b.Name, s.Kind, s.Namespace, s.Name)
			}
		}
	}
	if !bound(o, pod.Spec.ServiceAccountName, "", "nodes/proxy", "get") || !bound(o, pod.Spec.ServiceAccountName, "", "pods", "get") {
		t.Error("the agent's service account may not get nodes/proxy and pods, which the kubelet API needs")
	}
	if !boundTo(o, auth.Spec.Template.Spec.ServiceAccountName, "system:auth-delegator") {
		t.Error("the auth service's service account is not bound to system:auth-delegator, which token_review needs")
	}

	// The wid resources that let the agents join.
	data, err := os.ReadFile(filepath.Join("wid", "join.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := resource.Decode(data)
	if err != nil {
		t.Fatalf("wid/join.yaml: %v", err)
	}
	var tok *resource.JoinToken
	bots := map[string]bool{}
	for _, r := range rs {
		switch v := r.(type) {
		case *resource.JoinToken:
			if v.Metadata.Name == cfg.JoinToken {
				tok = v
			}
		case *resource.Bot:
			bots[v.Metadata.Name] = true
		}
	}
	if tok == nil {
		t.Fatalf("wid/join.yaml has no join token %q, which the agent joins with", cfg.JoinToken)
	}
	if !bots[tok.Spec.Bot] {
		t.Errorf("join token %s's bot %s is not in wid/join.yaml", tok.Metadata.Name, tok.Spec.Bot)
	}
	// The auth StatefulSet runs without a config file: it has no
	// kubernetes_clusters, so the token must use the cluster it runs in.
	if c := tok.Spec.Kubernetes.Cluster; c != "" || !tok.Spec.Kubernetes.TokenReview {
		t.Errorf("join token %s names cluster %q or no token_review: the auth service here configures no kubernetes_clusters, so only a token_review of its own cluster works", tok.Metadata.Name, c)
	}
	if !tok.Spec.Kubernetes.Allows(namespace, pod.Spec.ServiceAccountName) {
		t.Errorf("join token %s does not allow the agent's service account %s:%s", tok.Metadata.Name, namespace, pod.Spec.ServiceAccountName)
	}
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// bound reports whether service account sa may verb resource of apiGroup
// through a ClusterRoleBinding of the manifests.
func bound(o *objects, sa, apiGroup, res, verb string) bool {
	for _, b := range o.clusterRoleBindings {
		if !hasSubject(b, sa) {
			continue
		}
		role := o.clusterRoles[b.RoleRef.Name]
		if role == nil {
			continue
		}
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, apiGroup) && slices.Contains(r.Resources, res) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
	}
	return false
}

func boundTo(o *objects, sa, clusterRole string) bool {
	for _, b := range o.clusterRoleBindings {
		if b.RoleRef.Name == clusterRole && hasSubject(b, sa) {
			return true
		}
	}
	return false
}

func hasSubject(b *rbacv1.ClusterRoleBinding, sa string) bool {
	for _, s := range b.Subjects {
		if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == namespace {
			return true
		}
	}
	return false
}

// The decoder this test relies on must refuse a misspelt field, or the
// test could not catch one.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x, namespace: wid}\nspec:\n  template:\n    spec:\n      hostPid: true\n")
	if err := strictDecode(doc, &appsv1.DaemonSet{}); err == nil || !strings.Contains(err.Error(), "hostPid") {
		t.Errorf("a misspelt hostPID decoded: %v", err)
	}
	if got := len(documents([]byte("# c\n---\na: 1\n---\n\n---\nb: 2\n"))); got != 2 {
		t.Errorf("documents = %d, want 2", got)
	}
}
