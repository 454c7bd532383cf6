package attest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// CgroupEntry is one line of /proc/<pid>/cgroup:
// "hierarchy-ID:controller-list:cgroup-path". Under cgroup v2 there is one
// line, "0::/path"; under v1 one per hierarchy; hybrid hosts have both.
type CgroupEntry struct {
	Hierarchy   int
	Controllers string
	Path        string
}

// Cgroups are the cgroups of one process, as the kernel listed them.
type Cgroups []CgroupEntry

// maxCgroupLines bounds a cgroup file: a kernel has a few dozen hierarchies.
const maxCgroupLines = 256

// ParseCgroups parses the contents of /proc/<pid>/cgroup.
func ParseCgroups(b []byte) (Cgroups, error) {
	var out Cgroups
	for n := 1; len(b) > 0; n++ {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		if len(out) == maxCgroupLines {
			return nil, fmt.Errorf("more than %d cgroup lines", maxCgroupLines)
		}
		first := bytes.IndexByte(line, ':')
		if first < 0 {
			return nil, fmt.Errorf("line %d %q is not hierarchy:controllers:path", n, clip(line))
		}
		second := bytes.IndexByte(line[first+1:], ':')
		if second < 0 {
			return nil, fmt.Errorf("line %d %q is not hierarchy:controllers:path", n, clip(line))
		}
		second += first + 1
		h, err := strconv.ParseUint(string(line[:first]), 10, 31)
		if err != nil {
			return nil, fmt.Errorf("line %d: hierarchy %q is not a number", n, clip(line[:first]))
		}
		path := line[second+1:]
		if len(path) == 0 || path[0] != '/' {
			return nil, fmt.Errorf("line %d: cgroup path %q does not start with '/'", n, clip(path))
		}
		out = append(out, CgroupEntry{Hierarchy: int(h), Controllers: string(line[first+1 : second]), Path: string(path)})
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup lines")
	}
	return out, nil
}

// clip shortens text quoted in an error: a cgroup path is chosen by whoever
// created the cgroup.
func clip(b []byte) string {
	const max = 120
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// Container runtimes as told by the cgroup path.
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeDocker     = "docker"
	// RuntimeUnknown is a bare container id, as kubelet's cgroupfs driver
	// names containers of any runtime.
	RuntimeUnknown = ""
)

// ContainerRef is the container a process runs in, from its cgroups.
type ContainerRef struct {
	// ID is the runtime's 64 hex digit container id.
	ID      string
	Runtime string
	// PodUID is the Kubernetes pod's uid (with dashes); "" outside a pod.
	PodUID string
}

// ErrNoContainer means the cgroups name no container in a layout this
// package knows.
var ErrNoContainer = errors.New("the calling process runs in no container wid can recognize")

// Container finds the container (and pod) of a process. It knows the
// layouts of containerd (cri-containerd-<id>.scope), CRI-O (crio-<id>.scope),
// Docker (docker-<id>.scope, /docker/<id>) and kubelet's cgroupfs driver
// (/kubepods/<qos>/pod<uid>/<id>), and the pod slices of its systemd driver
// (kubepods-<qos>-pod<uid>.slice). On a nested host (kind: a Kubernetes node
// in a Docker container) the innermost container counts; any other nesting
// is refused (see checkNesting). Lines that name no container are skipped
// (hybrid hosts keep the v2 line at the runtime's own service); lines that
// name different containers are an error.
func (cg Cgroups) Container() (ContainerRef, error) {
	if err := cg.checkNotDelegated(); err != nil {
		return ContainerRef{}, err
	}
	var (
		found      ContainerRef
		foundOuter []string
	)
	for _, e := range cg {
		chain := containersInPath(e.Path)
		if len(chain) == 0 {
			continue
		}
		if err := checkNesting(e.Path, chain); err != nil {
			return ContainerRef{}, err
		}
		ref := chain[len(chain)-1]
		var outer []string
		for _, c := range chain[:len(chain)-1] {
			outer = append(outer, c.ID)
		}
		switch {
		case found.ID == "" || slices.Contains(outer, found.ID):
			// The first, or one inside the container found so far.
			found, foundOuter = ref, outer
			continue
		case slices.Contains(foundOuter, ref.ID):
			// The container around the one found (kind's v2 line).
			continue
		case ref.ID != found.ID:
			return ContainerRef{}, fmt.Errorf("the caller's cgroups name two containers, %s and %s: refusing to choose", found.ID, ref.ID)
		}
		if ref.PodUID != found.PodUID {
			return ContainerRef{}, fmt.Errorf("the caller's cgroups name two pods, %q and %q: refusing to choose", found.PodUID, ref.PodUID)
		}
	}
	if found.ID == "" {
		return ContainerRef{}, fmt.Errorf("%w: its cgroup is %q, not a containerd, CRI-O, Docker or kubelet cgroup", ErrNoContainer, cg.describe())
	}
	return found, nil
}

// DockerContainer finds the Docker container of a process: the innermost
// docker-<id>.scope or /docker/<id> of its cgroups. In a Kubernetes node that
// runs in Docker (kind), that is the node's container.
func (cg Cgroups) DockerContainer() (string, error) {
	if err := cg.checkNotDelegated(); err != nil {
		return "", err
	}
	var found string
	for _, e := range cg {
		if err := checkNesting(e.Path, containersInPath(e.Path)); err != nil {
			return "", err
		}
		id := ""
		segs := strings.Split(e.Path, "/")
		for i, s := range segs {
			if c, ok := strings.CutPrefix(s, "docker-"); ok {
				if c, ok := strings.CutSuffix(c, ".scope"); ok && isContainerID(c) {
					id = c
				}
			} else if s == "docker" && i+1 < len(segs) && isContainerID(segs[i+1]) {
				id = segs[i+1]
			}
		}
		if id == "" {
			continue
		}
		if found != "" && found != id {
			return "", fmt.Errorf("the caller's cgroups name two Docker containers, %s and %s: refusing to choose", found, id)
		}
		found = id
	}
	if found == "" {
		return "", fmt.Errorf("%w: its cgroup is %q, not a Docker container's (docker-<id>.scope or /docker/<id>)", ErrNoContainer, cg.describe())
	}
	return found, nil
}

// checkNotDelegated refuses a process in a user's slice. systemd delegates
// the cgroups below user@<uid>.service to that user, who may create one
// named cri-containerd-<id>.scope in a kubepods-pod<uid>.slice there and
// move a process into it: such a name proves nothing about the container.
func (cg Cgroups) checkNotDelegated() error {
	for _, e := range cg {
		if e.Path == "/user.slice" || strings.HasPrefix(e.Path, "/user.slice/") {
			return fmt.Errorf("%w: its cgroup %q is in a user's slice, whose cgroups users name themselves", ErrNoContainer, clip([]byte(e.Path)))
		}
	}
	return nil
}

// describe names the cgroup for an error: the v2 path if there is one, else
// the first line's.
func (cg Cgroups) describe() string {
	for _, e := range cg {
		if e.Hierarchy == 0 {
			return clip([]byte(e.Path))
		}
	}
	if len(cg) == 0 {
		return ""
	}
	return clip([]byte(cg[0].Path))
}

// containersInPath returns the containers named by one cgroup path,
// outermost first, each with the pod it is in when a pod segment comes
// before it.
func containersInPath(path string) []ContainerRef {
	var (
		chain  []ContainerRef
		podUID string
		prev   string
	)
	for s := range strings.SplitSeq(path, "/") {
		if uid, ok := podSegment(s); ok {
			podUID = uid
			prev = s
			continue
		}
		if id, runtime, ok := containerSegment(s, prev); ok {
			chain = append(chain, ContainerRef{ID: id, Runtime: runtime, PodUID: podUID})
			// A pod encloses only the containers right below it.
			podUID = ""
		}
		prev = s
	}
	return chain
}

// checkNesting allows one container nested in another only in kind's
// shape: a pod's container inside a container that is in no pod (the
// Kubernetes node, run by Docker). A process that may manage cgroups inside
// its own container can create child cgroups named after any container or
// pod and move itself there; crediting it with the innermost name would
// give it that container's identity. So a container inside a pod's
// container, a container inside a container with no pod between them
// (Docker in Docker), and deeper nesting are refused.
func checkNesting(path string, chain []ContainerRef) error {
	switch {
	case len(chain) <= 1:
		return nil
	case len(chain) == 2 && chain[0].PodUID == "" && chain[1].PodUID != "":
		return nil
	}
	outer, inner := chain[len(chain)-2], chain[len(chain)-1]
	where := "container " + outer.ID
	if outer.PodUID != "" {
		where += " of pod " + outer.PodUID
	}
	return fmt.Errorf("the caller's cgroup %q nests container %s inside %s: a process in a container can name its own child cgroups after another container, so a nested container is not credited", clip([]byte(path)), inner.ID, where)
}

// containerSegment recognizes a container's cgroup: a runtime's systemd
// scope, or a bare id (kubelet's cgroupfs driver, Docker's /docker/<id>).
func containerSegment(s, prev string) (id, runtime string, ok bool) {
	if c, ok := strings.CutSuffix(s, ".scope"); ok {
		for _, p := range [...]struct{ prefix, runtime string }{
			{"cri-containerd-", RuntimeContainerd},
			{"crio-", RuntimeCRIO},
			{"docker-", RuntimeDocker},
		} {
			if id, ok := strings.CutPrefix(c, p.prefix); ok && isContainerID(id) {
				return id, p.runtime, true
			}
		}
		return "", "", false
	}
	if !isContainerID(s) {
		return "", "", false
	}
	if prev == "docker" {
		return s, RuntimeDocker, true
	}
	return s, RuntimeUnknown, true
}

// podSegment recognizes a pod's cgroup: pod<uid> (cgroupfs driver) or
// kubepods[-<qos>]-pod<uid with underscores>.slice (systemd driver).
func podSegment(s string) (string, bool) {
	if uid, ok := strings.CutPrefix(s, "pod"); ok {
		return uid, isPodUID(uid)
	}
	rest, ok := strings.CutSuffix(s, ".slice")
	if !ok || !strings.HasPrefix(rest, "kubepods-") {
		return "", false
	}
	i := strings.LastIndex(rest, "-pod")
	if i < 0 {
		return "", false
	}
	uid := strings.ReplaceAll(rest[i+len("-pod"):], "_", "-")
	return uid, isPodUID(uid)
}

// isContainerID: 64 lower-case hex digits, as containerd, CRI-O and Docker
// name containers.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// isPodUID: a UUID (8-4-4-4-12 hex digits), or 32 hex digits, which is how
// kubelet names static pods.
func isPodUID(s string) bool {
	switch len(s) {
	case 32:
		for i := 0; i < len(s); i++ {
			if !isHex(s[i]) {
				return false
			}
		}
		return true
	case 36:
		for i := 0; i < len(s); i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isHex(s[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// SystemdUnit is where systemd put a process.
type SystemdUnit struct {
	// Unit is the system manager's unit (foo.service, session-2.scope,
	// user@1000.service); Slice the slice it is in (system.slice).
	Unit, Slice string
	// UserUnit and UserSlice are set for a process of a user manager
	// (in user@<uid>.service): the unit and slice within it.
	UserUnit, UserSlice string
}

// SystemdUnit finds the process's unit from its systemd cgroup: the
// name=systemd hierarchy on v1 and hybrid hosts, else the cgroup v2 line. As systemd does, the unit is
// the first component that is not a slice; the slice the last one before it.
func (cg Cgroups) SystemdUnit() (SystemdUnit, error) {
	// On v1 and hybrid hosts systemd keeps its tree in the name=systemd
	// hierarchy (a hybrid host's v2 line may say "/" or mirror it); on v2
	// the one line is its tree.
	path := ""
	for _, e := range cg {
		if e.Controllers == "name=systemd" {
			path = e.Path
			break
		}
	}
	if path == "" {
		for _, e := range cg {
			if e.Hierarchy == 0 && e.Controllers == "" {
				path = e.Path
				break
			}
		}
	}
	if path == "" {
		return SystemdUnit{}, errors.New("the caller has no systemd cgroup (neither cgroup v2 nor a name=systemd hierarchy): is systemd the init system?")
	}
	unit, slice, rest, ok := unitInPath(path)
	if !ok {
		return SystemdUnit{}, fmt.Errorf("the caller's cgroup %q is in no systemd unit", clip([]byte(path)))
	}
	out := SystemdUnit{Unit: unit, Slice: slice}
	if strings.HasPrefix(unit, "user@") && strings.HasSuffix(unit, ".service") {
		if u, s, _, ok := unitInPath(rest); ok {
			out.UserUnit, out.UserSlice = u, s
		}
	}
	return out, nil
}

// unitInPath returns the first unit of path, the slice above it ("-.slice"
// at the root) and what follows the unit.
func unitInPath(path string) (unit, slice, rest string, ok bool) {
	slice = "-.slice"
	for path != "" {
		path = strings.TrimLeft(path, "/")
		seg := path
		if i := strings.IndexByte(path, '/'); i >= 0 {
			seg, path = path[:i], path[i:]
		} else {
			path = ""
		}
		if seg == "" {
			break
		}
		if strings.HasSuffix(seg, ".slice") && isUnitName(seg) {
			slice = seg
			continue
		}
		if !isUnitName(seg) {
			return "", "", "", false
		}
		return seg, slice, path, true
	}
	return "", "", "", false
}

// isUnitName checks a systemd unit name of a kind that holds processes:
// name characters as systemd allows them, and a known suffix.
func isUnitName(s string) bool {
	dot := strings.LastIndexByte(s, '.')
	if dot <= 0 || len(s) > 255 {
		return false
	}
	switch s[dot:] {
	case ".service", ".scope", ".slice", ".socket", ".mount", ".swap":
	default:
		return false
	}
	for i := 0; i < dot; i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(":-_.\\@", c) >= 0) {
			return false
		}
	}
	return true
}
