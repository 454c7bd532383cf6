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
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
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
	csiDrivers          map[string]*storagev1.CSIDriver
	jobs                map[string]*batchv1.Job
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
	case *storagev1.CSIDriver:
		o.csiDrivers[v.Name] = v
		return &v.ObjectMeta
	case *batchv1.Job:
		o.jobs[v.Name] = v
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
		csiDrivers: map[string]*storagev1.CSIDriver{}, jobs: map[string]*batchv1.Job{},
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
			case "storage.k8s.io/v1 CSIDriver":
				obj = &storagev1.CSIDriver{}
			case "batch/v1 Job":
				obj = &batchv1.Job{}
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
			clusterScoped := tm.Kind == "Namespace" || tm.Kind == "CSIDriver" || strings.HasPrefix(tm.Kind, "Cluster")
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
		// Go's flag package (the CSI driver's) takes -name as --name.
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") {
			a = "-" + a
		}
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

// TestCSIManifests: the alternative set in csi/ mounts the Workload API
// socket into workloads with the SPIFFE CSI driver instead of a hostPath:
// it decodes strictly, the driver serves the directory the agent of the
// main set keeps its socket in, registers with the kubelet where the
// kubelet looks, and the example workload reaches the socket through a
// read-only csi.spiffe.io volume with no hostPath of its own.
func TestCSIManifests(t *testing.T) {
	base := decode(t, ".")
	cfg := agentConfig(t, base)
	o := decode(t, "csi")

	drv := o.csiDrivers["csi.spiffe.io"]
	if drv == nil {
		t.Fatal("csi/ has no CSIDriver csi.spiffe.io")
	}
	if drv.Spec.AttachRequired == nil || *drv.Spec.AttachRequired || drv.Spec.PodInfoOnMount == nil || !*drv.Spec.PodInfoOnMount ||
		!slices.Equal(drv.Spec.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}) {
		t.Errorf("CSIDriver csi.spiffe.io must be attach-free, get pod info on mount and serve ephemeral volumes only: %+v", drv.Spec)
	}
	if drv.Spec.FSGroupPolicy == nil || *drv.Spec.FSGroupPolicy != storagev1.NoneFSGroupPolicy {
		t.Error("CSIDriver csi.spiffe.io must not change the socket's group (fsGroupPolicy None)")
	}

	ds := o.daemonSets["spiffe-csi-driver"]
	if ds == nil {
		t.Fatal("csi/ has no DaemonSet spiffe-csi-driver")
	}
	pod := &ds.Spec.Template
	checkPod(t, o, "DaemonSet spiffe-csi-driver", pod, ds.Spec.Selector)
	var driver, registrar corev1.Container
	for _, c := range pod.Spec.Containers {
		switch c.Name {
		case "spiffe-csi-driver":
			driver = c
		case "node-driver-registrar":
			registrar = c
		}
	}
	// The driver hands out the agent's socket directory.
	sockDir := flagValues(driver.Args, "workload-api-socket-dir")
	if len(sockDir) != 1 {
		t.Fatalf("the driver's -workload-api-socket-dir is %v, want one", sockDir)
	}
	var agentDir *corev1.Volume
	for _, m := range driver.VolumeMounts {
		if m.MountPath == sockDir[0] {
			agentDir = volumeOf(pod, m.Name)
			if !m.ReadOnly {
				t.Error("the driver mounts the agent's socket directory writable; it only reads it")
			}
		}
	}
	if agentDir == nil || agentDir.HostPath == nil || agentDir.HostPath.Path != path.Dir(cfg.WorkloadSocket) {
		t.Errorf("-workload-api-socket-dir %s is not the node's %s, where the agent keeps %s", sockDir[0], path.Dir(cfg.WorkloadSocket), cfg.WorkloadSocket)
	}
	// Its CSI socket is where the registrar looks, and the kubelet path the
	// registrar gives is the host side of that directory.
	csiSock := flagValues(driver.Args, "csi-socket-path")
	if len(csiSock) != 1 || !slices.Equal(flagValues(registrar.Args, "csi-address"), csiSock) {
		t.Fatalf("the driver listens on %v but the registrar dials %v", csiSock, flagValues(registrar.Args, "csi-address"))
	}
	plugin := volumeOf(pod, "spiffe-csi-socket")
	if plugin == nil || plugin.HostPath == nil || mountOf(driver, "spiffe-csi-socket") != path.Dir(csiSock[0]) {
		t.Fatal("the driver's CSI socket is not in the spiffe-csi-socket hostPath")
	}
	if reg := flagValues(registrar.Args, "kubelet-registration-path"); len(reg) != 1 || reg[0] != path.Join(plugin.HostPath.Path, path.Base(csiSock[0])) ||
		plugin.HostPath.Path != "/var/lib/kubelet/plugins/"+drv.Name {
		t.Errorf("the registrar registers %v, not the driver's socket under /var/lib/kubelet/plugins/%s", reg, drv.Name)
	}
	if names := flagValues(driver.Args, "plugin-name"); len(names) != 1 || names[0] != drv.Name {
		t.Errorf("the driver calls itself %v, not the CSIDriver's name %s", names, drv.Name)
	}
	bidirectional := false
	for _, m := range driver.VolumeMounts {
		if m.MountPath == "/var/lib/kubelet/pods" && m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			bidirectional = true
		}
	}
	if !bidirectional || driver.SecurityContext == nil || driver.SecurityContext.Privileged == nil || !*driver.SecurityContext.Privileged {
		t.Error("the driver needs a privileged container with /var/lib/kubelet/pods mounted Bidirectional to publish volumes")
	}

	// The example workload: a read-only CSI volume, the socket's name in
	// SPIFFE_ENDPOINT_SOCKET, no hostPath.
	job := o.jobs["example-workload"]
	if job == nil {
		t.Fatal("csi/ has no example Job example-workload")
	}
	wpod := &job.Spec.Template
	checkPod(t, o, "Job example-workload", wpod, &metav1.LabelSelector{})
	for _, v := range wpod.Spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("the example workload has hostPath volume %s; with the CSI driver it needs none", v.Name)
		}
	}
	vol := volumeOf(wpod, "spiffe-workload-api")
	if vol == nil || vol.CSI == nil || vol.CSI.Driver != drv.Name || vol.CSI.ReadOnly == nil || !*vol.CSI.ReadOnly {
		t.Fatalf("the example workload's spiffe-workload-api volume is not a read-only %s CSI volume", drv.Name)
	}
	app := wpod.Spec.Containers[0]
	want := "unix://" + path.Join(mountOf(app, "spiffe-workload-api"), path.Base(cfg.WorkloadSocket))
	var got string
	for _, e := range app.Env {
		if e.Name == "SPIFFE_ENDPOINT_SOCKET" {
			got = e.Value
		}
	}
	if got != want {
		t.Errorf("the example workload's SPIFFE_ENDPOINT_SOCKET is %q, want %q", got, want)
	}
}

// agentConfig is the agent's config in the main set's ConfigMap, as
// widagent reads it.
func agentConfig(t *testing.T, o *objects) agentcmd.StartOptions {
	t.Helper()
	cm := o.configMaps["wid-agent"]
	if cm == nil || cm.Data["agent.yaml"] == "" {
		t.Fatal("no ConfigMap wid-agent with agent.yaml")
	}
	file := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(file, []byte(cm.Data["agent.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := agentcmd.LoadStartConfig(file)
	if err != nil {
		t.Fatalf("widagent refuses the ConfigMap's agent.yaml: %v", err)
	}
	return cfg
}
