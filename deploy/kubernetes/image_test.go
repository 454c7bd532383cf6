package kubernetes_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct{ op, args string }

// stages reads a Dockerfile into its stages' instructions. Docker is not
// needed (nor installed in CI): the test checks what the file says.
func stages(t *testing.T, file string) [][]instruction {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]instruction
	var cur string
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		op, args, _ := strings.Cut(cur, " ")
		cur = ""
		in := instruction{strings.ToUpper(op), strings.TrimSpace(args)}
		if in.op == "FROM" {
			out = append(out, nil)
		}
		if len(out) == 0 {
			t.Fatalf("%s: %s before FROM", file, in.op)
		}
		out[len(out)-1] = append(out[len(out)-1], in)
	}
	return out
}

// image is what the final stage of a Dockerfile makes.
type image struct {
	base     string
	binaries map[string]string // name -> directory it is copied to
	path     []string
	user     string
}

func finalImage(t *testing.T, file string) (image, [][]instruction) {
	t.Helper()
	st := stages(t, file)
	if len(st) == 0 {
		t.Fatalf("%s has no FROM", file)
	}
	img := image{binaries: map[string]string{}}
	for _, in := range st[len(st)-1] {
		switch in.op {
		case "FROM":
			img.base = strings.Fields(in.args)[0]
		case "COPY":
			var fields []string
			for _, f := range strings.Fields(in.args) {
				if !strings.HasPrefix(f, "--") {
					fields = append(fields, f)
				}
			}
			dst := fields[len(fields)-1]
			for _, src := range fields[:len(fields)-1] {
				img.binaries[filepath.Base(src)] = strings.TrimSuffix(dst, "/")
			}
		case "ENV":
			if v, ok := strings.CutPrefix(in.args, "PATH="); ok {
				img.path = strings.Split(v, ":")
			}
		case "USER":
			img.user = in.args
		}
	}
	return img, st
}

// The image the manifests name is one this repository builds (make image
// from the Dockerfile, GoReleaser from deploy/docker/release.Dockerfile),
// and it holds, on its PATH, every command the manifests and the
// walkthrough run in it; it is static on a distroless or scratch base, and
// runs as the user the auth service's pod runs as.
func TestImageHoldsWhatManifestsRun(t *testing.T) {
	o := decode(t, ".")
	var containers []corev1.Container
	for _, s := range o.statefulSets {
		containers = append(containers, s.Spec.Template.Spec.Containers...)
	}
	for _, d := range o.daemonSets {
		containers = append(containers, d.Spec.Template.Spec.Containers...)
	}
	const want = "ghcr.io/wid-project/wid:latest"
	commands := map[string]bool{}
	for _, c := range containers {
		if c.Image != want {
			t.Errorf("container %s runs image %q, want %q, the one make image and the release build", c.Name, c.Image, want)
		}
		if len(c.Command) > 0 {
			commands[c.Command[0]] = true
		}
	}
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`kubectl .*exec .*-- (\S+)`).FindAllStringSubmatch(string(doc), -1) {
		commands[m[1]] = true
	}
	if !commands["widagent"] || !commands["widctl"] {
		t.Fatalf("commands run in the image: %v, want widagent and widctl among them", commands)
	}

	auth := o.statefulSets["wid-auth"].Spec.Template.Spec.SecurityContext
	for _, file := range []string{"../../Dockerfile", "../docker/release.Dockerfile"} {
		img, st := finalImage(t, file)
		if !strings.HasPrefix(img.base, "gcr.io/distroless/static") && img.base != "scratch" {
			t.Errorf("%s: final base %s, want distroless static or scratch (static binaries need nothing else)", file, img.base)
		}
		for cmd := range commands {
			dir, ok := img.binaries[cmd]
			if !ok {
				t.Errorf("%s: the image holds no %s, which the manifests or docs/kubernetes.md run", file, cmd)
			} else if !slices.Contains(img.path, dir) {
				t.Errorf("%s: %s is in %s, not on the image's PATH %v", file, cmd, dir, img.path)
			}
		}
		if want := "65532:65532"; img.user != want || auth == nil || *auth.RunAsUser != 65532 || *auth.RunAsGroup != 65532 {
			t.Errorf("%s: USER %q, want %s as the auth pod's runAsUser/runAsGroup", file, img.user, want)
		}
		if file != "../../Dockerfile" {
			continue
		}
		// The build stage: every binary from its cmd/ package, without cgo.
		var build string
		for _, in := range st[0] {
			if in.op == "RUN" && strings.Contains(in.args, "go build") {
				build = in.args
			}
		}
		if !strings.Contains(build, "CGO_ENABLED=0") {
			t.Errorf("%s builds with %q: want CGO_ENABLED=0 (the base has no libc)", file, build)
		}
		for cmd := range commands {
			if !strings.Contains(build, "./cmd/"+cmd) {
				t.Errorf("%s does not build ./cmd/%s", file, cmd)
			}
			if _, err := os.Stat(filepath.Join("../../cmd", cmd, "main.go")); err != nil {
				t.Errorf("./cmd/%s: %v", cmd, err)
			}
		}
	}

	// make image tags the image the manifests name.
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^IMAGE \?= `+regexp.QuoteMeta(want)+`$`).Match(mk) || !regexp.MustCompile(`(?m)^image:`).Match(mk) {
		t.Errorf("the Makefile has no image target tagging %s", want)
	}

	// GoReleaser publishes it, from the static binaries it builds.
	var gr struct {
		Builds []struct {
			ID     string   `json:"id"`
			Binary string   `json:"binary"`
			Env    []string `json:"env"`
			Goos   []string `json:"goos"`
		} `json:"builds"`
		Dockers []struct {
			IDs        []string `json:"ids"`
			Goos       string   `json:"goos"`
			Dockerfile string   `json:"dockerfile"`
		} `json:"dockers"`
		DockerManifests []struct {
			Name string `json:"name_template"`
		} `json:"docker_manifests"`
	}
	data, err := os.ReadFile("../../.goreleaser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &gr); err != nil {
		t.Fatal(err)
	}
	binaries := map[string]string{}
	for _, b := range gr.Builds {
		if !slices.Contains(b.Env, "CGO_ENABLED=0") || !slices.Contains(b.Goos, "linux") {
			t.Errorf("GoReleaser build %s: env %v, goos %v; want CGO_ENABLED=0 and linux", b.ID, b.Env, b.Goos)
		}
		binaries[b.ID] = b.Binary
	}
	if len(gr.Dockers) == 0 {
		t.Fatal(".goreleaser.yaml builds no image")
	}
	for _, d := range gr.Dockers {
		if d.Dockerfile != "deploy/docker/release.Dockerfile" || d.Goos != "linux" {
			t.Errorf("GoReleaser image from %s for %s, want deploy/docker/release.Dockerfile for linux", d.Dockerfile, d.Goos)
		}
		for cmd := range commands {
			if !slices.ContainsFunc(d.IDs, func(id string) bool { return binaries[id] == cmd }) {
				t.Errorf("GoReleaser image (ids %v) gets no %s binary", d.IDs, cmd)
			}
		}
	}
	if !slices.ContainsFunc(gr.DockerManifests, func(m struct {
		Name string `json:"name_template"`
	}) bool {
		return m.Name == want
	}) {
		t.Errorf("GoReleaser publishes no %s", want)
	}
}
