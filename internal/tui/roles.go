package tui

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/core/condition"
	"google.golang.org/grpc/status"
)

// ExplainResultMsg is the auth service's answer to an explain form.
type ExplainResultMsg struct {
	Request  *authv1.ExplainRequest
	Response *authv1.ExplainResponse
	Err      error
}

// resource is the part of a role or workload identity the Roles tab shows.
type resource struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec map[string]any `json:"spec"`
}

// rolesTab lists roles and workload identities with their grants; e on a
// role opens a form that asks the auth service to explain a decision.
type rolesTab struct {
	keys    keyMap
	st      styles
	res     map[string][]resource
	denied  map[string]error // kinds the caller may not list, and why
	cursor  int
	width   int
	height  int
	form    bool
	focus   int
	inputs  []textinput.Model // SPIFFE ID, DNS SANs, TTL, workload attributes
	formErr string
	pending bool
	result  *ExplainResultMsg
	explain func(*authv1.ExplainRequest) tea.Cmd
	// marks hold the locks, listed below the workload identities and
	// flagged on those they cover; now is the dashboard's clock.
	marks *marks
	now   func() time.Time
}

var explainLabels = []string{"SPIFFE ID", "DNS SANs", "TTL", "Workload"}

// The explain form's inputs.
const (
	inSPIFFEID = iota
	inDNSSANs
	inTTL
	inWorkload
)

func newRolesTab(keys keyMap, st styles, explain func(*authv1.ExplainRequest) tea.Cmd) *rolesTab {
	t := &rolesTab{keys: keys, st: st, res: map[string][]resource{}, denied: map[string]error{}, explain: explain}
	// "e.g." so that a placeholder never reads as a value, even without colour.
	for _, ph := range []string{"e.g. /svc/web/frontend", "e.g. web.internal, api.internal", "e.g. 1h", "e.g. workload.unix.uid=1000,workload.unix.path=/usr/bin/web"} {
		ti := textinput.New()
		ti.Prompt = ""
		ti.Placeholder = ph
		t.inputs = append(t.inputs, ti)
	}
	return t
}

// SetSize gives the tab its area.
func (t *rolesTab) SetSize(w, h int) {
	t.width, t.height = w, h
	for i := range t.inputs {
		t.inputs[i].Width = max(w-16, 10)
	}
}

// Capturing says whether the tab wants every key (the form is open).
func (t *rolesTab) Capturing() bool { return t.form }

func (t *rolesTab) set(kind string, raw [][]byte) {
	var rs []resource
	for _, b := range raw {
		var r resource
		if err := json.Unmarshal(b, &r); err != nil {
			continue
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b resource) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	t.res[kind] = rs
	t.cursor = min(t.cursor, max(len(t.res["role"])-1, 0))
}

func (t *rolesTab) setDenied(kind string, err error) {
	t.denied[kind] = err
	delete(t.res, kind)
}

func (t *rolesTab) selectedRole() string {
	if roles := t.res["role"]; t.cursor < len(roles) {
		return roles[t.cursor].Metadata.Name
	}
	return ""
}

func (t *rolesTab) Update(msg tea.Msg) tea.Cmd {
	if r, ok := msg.(ExplainResultMsg); ok {
		t.pending, t.result = false, &r
		return nil
	}
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	if t.form {
		return t.updateForm(km)
	}
	switch {
	case key.Matches(km, t.keys.Up):
		t.cursor = max(t.cursor-1, 0)
	case key.Matches(km, t.keys.Down):
		t.cursor = min(t.cursor+1, max(len(t.res["role"])-1, 0))
	case key.Matches(km, t.keys.Explain):
		if t.selectedRole() == "" {
			return nil
		}
		t.form, t.focus, t.formErr, t.result = true, 0, "", nil
		for i := range t.inputs {
			t.inputs[i].Blur()
		}
		return t.inputs[0].Focus()
	}
	return nil
}

func (t *rolesTab) updateForm(km tea.KeyMsg) tea.Cmd {
	switch km.String() {
	case "esc":
		t.form = false
		return nil
	case "tab", "down":
		return t.move(1)
	case "shift+tab", "up":
		return t.move(-1)
	case "enter":
		return t.submit()
	}
	var cmd tea.Cmd
	t.inputs[t.focus], cmd = t.inputs[t.focus].Update(km)
	return cmd
}

func (t *rolesTab) move(d int) tea.Cmd {
	t.inputs[t.focus].Blur()
	t.focus = (t.focus + d + len(t.inputs)) % len(t.inputs)
	return t.inputs[t.focus].Focus()
}

// submit asks about a SPIFFE ID (with its SANs and TTL), about a workload
// with the given attestation attributes (which workload identities the
// role's holder would issue it), or both at once.
func (t *rolesTab) submit() tea.Cmd {
	req := &authv1.ExplainRequest{PrincipalKind: "role", PrincipalName: t.selectedRole(), SpiffeId: strings.TrimSpace(t.inputs[inSPIFFEID].Value())}
	if v := strings.TrimSpace(t.inputs[inWorkload].Value()); v != "" {
		attrs, err := condition.ParseAttributes(v)
		if err != nil {
			t.formErr = "workload attributes: " + err.Error()
			return nil
		}
		req.WorkloadAttributes = attrs
	}
	if req.SpiffeId == "" && len(req.WorkloadAttributes) == 0 {
		t.formErr = "give a SPIFFE ID or path, or workload attributes such as workload.unix.uid=1000"
		return nil
	}
	for _, s := range strings.Split(t.inputs[inDNSSANs].Value(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			req.DnsSans = append(req.DnsSans, s)
		}
	}
	if v := strings.TrimSpace(t.inputs[inTTL].Value()); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.formErr = fmt.Sprintf("TTL %q is not a duration like 10m or 1h", v)
			return nil
		}
		req.TtlSeconds = int64(d / time.Second)
	}
	if req.SpiffeId == "" && (len(req.DnsSans) > 0 || req.TtlSeconds > 0) {
		t.formErr = "DNS SANs and a TTL belong to a SPIFFE ID: give one, or clear them to explain the workload alone"
		return nil
	}
	t.formErr, t.pending, t.result = "", true, nil
	if t.explain == nil {
		t.pending = false
		t.formErr = "explain is not available"
		return nil
	}
	return t.explain(req)
}

func (t *rolesTab) View() string {
	var lines []string
	lines = append(lines, t.st.header.Render("Roles"))
	roles, ok := t.res["role"]
	if err := t.denied["role"]; err != nil {
		lines = append(lines, t.deniedLines("roles", err)...)
	} else if !ok {
		lines = append(lines, t.st.dim.Render("  loading…"))
	}
	for i, r := range roles {
		mark := "  "
		if i == t.cursor {
			mark = t.st.selected.Render("›") + " "
		}
		lines = append(lines, mark+t.st.bold.Render(r.Metadata.Name)+"  "+grants("role", r.Spec))
	}
	lines = append(lines, "", t.st.header.Render("Workload identities"))
	wis, ok := t.res["workload_identity"]
	if err := t.denied["workload_identity"]; err != nil {
		lines = append(lines, t.deniedLines("workload identities", err)...)
	} else if !ok {
		lines = append(lines, t.st.dim.Render("  loading…"))
	}
	for _, r := range wis {
		line := "  " + t.st.bold.Render(r.Metadata.Name) + "  " + grants("workload_identity", r.Spec)
		if t.marks != nil && t.marks.lockOnPath(grants("workload_identity", r.Spec), t.now()) != nil {
			line += "  " + t.st.denied.Render("LOCKED")
		}
		lines = append(lines, line)
	}
	if t.marks != nil {
		lines = append(lines, t.lockLines()...)
	}
	if t.form || t.result != nil {
		form := t.formView()
		// The form takes the bottom of the tab; the list keeps the rest.
		keep := max(t.height-len(form), 0)
		if len(lines) > keep {
			lines = lines[:keep]
		}
		for len(lines) < keep {
			lines = append(lines, "")
		}
		lines = append(lines, form...)
	}
	return clip(lines, t.width, t.height)
}

// lockLines is the Locks section: each lock with its target, reason and
// end, so who is locked out, and why, shows where roles are.
func (t *rolesTab) lockLines() []string {
	lines := []string{"", t.st.header.Render("Locks")}
	switch {
	case t.marks.locksErr != nil:
		return append(lines, t.deniedLines("locks", t.marks.locksErr)...)
	case !t.marks.locksLoaded:
		return append(lines, t.st.dim.Render("  loading…"))
	case len(t.marks.locks) == 0:
		return append(lines, t.st.dim.Render("  none: nothing is locked"))
	}
	for i := range t.marks.locks {
		lines = append(lines, "  "+t.marks.locks[i].line(t.now(), t.st))
	}
	return lines
}

func (t *rolesTab) deniedLines(what string, err error) []string {
	return wrap("Your roles do not let you see "+what+": "+errText(err)+".", t.st.warn, t.width, 2)
}

func (t *rolesTab) formView() []string {
	lines := []string{"", t.st.title.Render("Explain: may role " + t.selectedRole() + " issue…")}
	for i, in := range t.inputs {
		mark := "  "
		if t.form && i == t.focus {
			mark = "› "
		}
		lines = append(lines, fmt.Sprintf("%s%-10s %s", mark, explainLabels[i], in.View()))
	}
	switch {
	case t.formErr != "":
		lines = append(lines, t.st.denied.Render(t.formErr))
	case t.pending:
		lines = append(lines, t.st.dim.Render("asking the auth service…"))
	case t.result != nil && t.result.Err != nil:
		lines = append(lines, t.st.denied.Render("the auth service could not explain: "+advice.Status(status.Convert(t.result.Err))))
	case t.result != nil:
		lines = append(lines, t.resultLines()...)
	default:
		lines = append(lines, t.st.dim.Render("tab moves, enter asks, esc closes"))
	}
	return lines
}

// resultLines is the auth service's answer: the decision on the SPIFFE ID
// and its failing check, and for a workload each identity issued or
// refused with its failing check.
func (t *rolesTab) resultLines() []string {
	var lines []string
	r, req := t.result.Response, t.result.Request
	if req.GetSpiffeId() != "" {
		if r.Allowed {
			lines = append(lines, t.st.ok.Render("ALLOWED")+" "+r.SpiffeId+fmt.Sprintf(" by role %s, TTL %s", r.Role, time.Duration(r.TtlSeconds)*time.Second))
		} else {
			lines = append(lines, t.st.denied.Render("DENIED")+" "+r.Reason+advice.Explained(r.Check, ""))
			lines = append(lines, t.st.dim.Render("failed check: "+r.Check))
		}
	}
	if len(req.GetWorkloadAttributes()) == 0 {
		return lines
	}
	if len(r.Workloads) == 0 {
		return append(lines, t.st.dim.Render("the workload gets nothing: there are no workload identities"))
	}
	issued := 0
	for _, w := range r.Workloads {
		if w.Allowed {
			issued++
		}
	}
	lines = append(lines, fmt.Sprintf("workload: %d of %d identities issued", issued, len(r.Workloads)))
	for _, w := range r.Workloads {
		if w.Allowed {
			lines = append(lines, "  "+t.st.ok.Render("ISSUED")+"  "+w.Identity+" → "+w.SpiffeId)
		} else {
			// The check first, so that a narrow terminal cuts the reason.
			lines = append(lines, "  "+t.st.denied.Render("REFUSED")+" "+w.Identity+t.st.dim.Render(" · failed check: "+w.Check)+" · "+w.Reason+advice.Explained(w.Check, w.Identity))
		}
	}
	return lines
}

// grants summarises a spec: SPIFFE paths allowed and denied, or the identity's ID.
func grants(kind string, spec map[string]any) string {
	get := func(m any, keys ...string) any {
		for _, k := range keys {
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[k]
		}
		return m
	}
	paths := func(v any) []string {
		var out []string
		l, _ := v.([]any)
		for _, g := range l {
			if p, ok := get(g, "path").(string); ok {
				out = append(out, p)
			}
		}
		return out
	}
	if kind == "workload_identity" {
		id, _ := get(spec, "spiffe", "id").(string)
		return id
	}
	var parts []string
	if a := paths(get(spec, "allow", "spiffe")); len(a) > 0 {
		parts = append(parts, "allow "+strings.Join(a, ", "))
	}
	if d := paths(get(spec, "deny", "spiffe")); len(d) > 0 {
		parts = append(parts, "deny "+strings.Join(d, ", "))
	}
	if len(parts) == 0 {
		return "no SPIFFE grants"
	}
	return strings.Join(parts, "; ")
}
