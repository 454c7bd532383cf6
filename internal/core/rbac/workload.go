package rbac

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/wid-project/wid/internal/core/resource"
)

// Workload is a workload identity compiled for matching: its templates are
// parsed once, so that an agent can test every identity against every
// caller without reparsing.
type Workload struct {
	Identity *resource.WorkloadIdentity
	id       *resource.Template
	dnsSANs  []*resource.Template
}

// CompileWorkload parses a workload identity's templates. The identity is
// expected to have passed Validate; the error covers stored documents that
// did not.
func CompileWorkload(wi *resource.WorkloadIdentity) (*Workload, error) {
	id, err := resource.ParseTemplate(wi.Spec.SPIFFE.ID)
	if err != nil {
		return nil, fmt.Errorf("workload identity %q: spec.spiffe.id: %w", wi.Metadata.Name, err)
	}
	w := &Workload{Identity: wi, id: id}
	for i, d := range wi.Spec.X509.DNSSANs {
		t, err := resource.ParseTemplate(d)
		if err != nil {
			return nil, fmt.Errorf("workload identity %q: spec.x509.dns_sans[%d]: %w", wi.Metadata.Name, i+1, err)
		}
		w.dnsSANs = append(w.dnsSANs, t)
	}
	return w, nil
}

// Name is the workload identity's name.
func (w *Workload) Name() string { return w.Identity.Metadata.Name }

// WorkloadMatch is what a workload identity gives one workload.
type WorkloadMatch struct {
	// Path is the SPIFFE ID path, its template filled in.
	Path    string
	DNSSANs []string
	Hint    string
}

// WorkloadMismatch says why a workload identity gives a workload nothing.
type WorkloadMismatch struct {
	Identity string
	// Check is "rules" when no rule matched and "template" when a rule
	// matched but the SPIFFE ID or a DNS SAN could not be filled in.
	Check  string
	Reason string
}

func (m *WorkloadMismatch) Error() string { return m.Reason }

// Match tests the identity's rules against a workload's attributes (any rule
// whose conditions all hold) and fills in its templates. An attribute the
// workload lacks fails every condition on it, not_eq and not_in included:
// missing evidence never grants an identity.
func (w *Workload) Match(attrs map[string]string) (WorkloadMatch, *WorkloadMismatch) {
	rules := w.Identity.Spec.Rules.Allow
	var why []string
	matched := false
	for i, rule := range rules {
		failed := ""
		for j := range rule.Conditions {
			if r := conditionFails(&rule.Conditions[j], attrs); r != "" {
				failed = r
				break
			}
		}
		if failed == "" {
			matched = true
			break
		}
		if len(rules) == 1 {
			why = append(why, failed)
		} else {
			why = append(why, fmt.Sprintf("rule %d: %s", i+1, failed))
		}
	}
	if !matched {
		return WorkloadMatch{}, &WorkloadMismatch{
			Identity: w.Name(),
			Check:    "rules",
			Reason:   fmt.Sprintf("workload identity %q does not match: %s", w.Name(), strings.Join(why, "; ")),
		}
	}
	p, err := w.id.RenderPath(attrs)
	if err != nil {
		return WorkloadMatch{}, &WorkloadMismatch{Identity: w.Name(), Check: "template",
			Reason: fmt.Sprintf("workload identity %q matches but gives no SPIFFE ID: %v", w.Name(), err)}
	}
	m := WorkloadMatch{Path: p, Hint: w.Identity.Spec.SPIFFE.Hint}
	for _, t := range w.dnsSANs {
		d, err := t.RenderDNSSAN(attrs)
		if err != nil {
			return WorkloadMatch{}, &WorkloadMismatch{Identity: w.Name(), Check: "template",
				Reason: fmt.Sprintf("workload identity %q matches but a DNS SAN cannot be filled in: %v", w.Name(), err)}
		}
		m.DNSSANs = append(m.DNSSANs, d)
	}
	return m, nil
}

// conditionFails returns why c does not hold for attrs, or "" when it does.
func conditionFails(c *resource.Condition, attrs map[string]string) string {
	v, ok := attrs[c.Attribute]
	if !ok {
		return c.Attribute + " is not set for this workload"
	}
	q := strconv.Quote
	switch {
	case c.Eq != nil:
		if v != *c.Eq {
			return fmt.Sprintf("%s is %s, not %s", c.Attribute, q(v), q(*c.Eq))
		}
	case c.NotEq != nil:
		if v == *c.NotEq {
			return fmt.Sprintf("%s is %s, which is excluded", c.Attribute, q(v))
		}
	case c.In != nil:
		if !slices.Contains(c.In, v) {
			return fmt.Sprintf("%s is %s, not one of %s", c.Attribute, q(v), quoteList(c.In))
		}
	case c.NotIn != nil:
		if slices.Contains(c.NotIn, v) {
			return fmt.Sprintf("%s is %s, which is excluded", c.Attribute, q(v))
		}
	case c.Glob != nil:
		if ok, err := path.Match(*c.Glob, v); err != nil || !ok {
			return fmt.Sprintf("%s is %s, which does not match %s", c.Attribute, q(v), q(*c.Glob))
		}
	default:
		return c.Attribute + " has a condition with no operator"
	}
	return ""
}

func quoteList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
