package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/wid-project/wid/internal/core/condition"
	"github.com/wid-project/wid/internal/core/resource"
)

// Resource prints one resource. In JSON and YAML it is the resource document
// itself, exactly what `widctl create -f` accepts; in text, a details view.
func (p *Printer) Resource(r resource.Resource) error {
	switch p.Format {
	case JSON:
		b, err := documentJSON(r)
		if err != nil {
			return err
		}
		_, err = p.Out.Write(append(b, '\n'))
		return err
	case YAML:
		b, err := resource.MarshalYAML(shown(r))
		if err != nil {
			return fmt.Errorf("encoding %s as YAML: %w", resource.Ref(r), err)
		}
		_, err = p.Out.Write(b)
		return err
	}
	d := NewDetails(p.Out)
	p.details(d, r)
	return d.Flush()
}

// Resources prints a list of resources of one kind: a table in text, a JSON
// array of documents, or a YAML stream of documents (which `widctl create -f`
// reads back).
func (p *Printer) Resources(kind string, rs []resource.Resource) error {
	switch p.Format {
	case JSON:
		var buf bytes.Buffer
		buf.WriteString("[")
		for i, r := range rs {
			b, err := documentJSON(r)
			if err != nil {
				return err
			}
			if i > 0 {
				buf.WriteString(",")
			}
			buf.WriteString("\n  ")
			buf.Write(bytes.ReplaceAll(b, []byte("\n"), []byte("\n  ")))
		}
		if len(rs) > 0 {
			buf.WriteString("\n")
		}
		buf.WriteString("]\n")
		_, err := p.Out.Write(buf.Bytes())
		return err
	case YAML:
		for i, r := range rs {
			if i > 0 {
				if _, err := io.WriteString(p.Out, "---\n"); err != nil {
					return err
				}
			}
			b, err := resource.MarshalYAML(shown(r))
			if err != nil {
				return fmt.Errorf("encoding %s as YAML: %w", resource.Ref(r), err)
			}
			if _, err := p.Out.Write(b); err != nil {
				return err
			}
		}
		return nil
	}
	t := p.table(kind)
	for _, r := range rs {
		p.row(t, r)
	}
	return t.Flush()
}

// documentJSON is the resource document, indented for people reading it.
func documentJSON(r resource.Resource) ([]byte, error) {
	b, err := resource.MarshalJSON(shown(r))
	if err != nil {
		return nil, fmt.Errorf("encoding %s as JSON: %w", resource.Ref(r), err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, b, "", "  "); err != nil {
		return nil, fmt.Errorf("encoding %s as JSON: %w", resource.Ref(r), err)
	}
	return buf.Bytes(), nil
}

// shown drops what must not leave the auth service even if a server sent
// it: a join token's secret hash would let anyone test guesses offline.
func shown(r resource.Resource) resource.Resource {
	if t, ok := r.(*resource.JoinToken); ok && t.Spec.SecretHash != "" {
		c := *t
		c.Spec.SecretHash = ""
		return &c
	}
	return r
}

func (p *Printer) table(kind string) *Table {
	switch kind {
	case resource.KindRole:
		return NewTable(p.Out, "name", "allow", "deny", "max svid ttl", "description")
	case resource.KindUser:
		return NewTable(p.Out, "name", "roles", "locked", "description")
	case resource.KindBot:
		return NewTable(p.Out, "name", "roles", "description")
	case resource.KindJoinToken:
		return NewTable(p.Out, "name", "bot", "method", "used", "expires")
	case resource.KindWorkloadIdentity:
		return NewTable(p.Out, "name", "spiffe id", "hint", "rules", "labels")
	case resource.KindFederation:
		return NewTable(p.Out, "trust domain", "profile", "url", "last refresh", "sequence", "error")
	case resource.KindLock:
		return NewTable(p.Out, "id", "target", "reason", "expires", "created by")
	}
	return NewTable(p.Out, "kind", "name")
}

func (p *Printer) row(t *Table, r resource.Resource) {
	md := r.GetMetadata()
	switch v := r.(type) {
	case *resource.Role:
		t.Row(md.Name, grantPaths(v.Spec.Allow.SPIFFE), grantPaths(v.Spec.Deny.SPIFFE), ttl(v.Spec.Options.MaxSVIDTTL), md.Description)
	case *resource.User:
		t.Row(md.Name, strings.Join(v.Spec.Roles, ", "), p.locked(v.Status), md.Description)
	case *resource.Bot:
		t.Row(md.Name, strings.Join(v.Spec.Roles, ", "), md.Description)
	case *resource.JoinToken:
		t.Row(md.Name, v.Spec.Bot, v.Spec.Method, uses(v), p.Time(v.Spec.Expires))
	case *resource.WorkloadIdentity:
		t.Row(md.Name, v.Spec.SPIFFE.ID, v.Spec.SPIFFE.Hint, ruleSummary(v.Spec.Rules), labels(md.Labels))
	case *resource.Federation:
		refresh, seq, errText := "never", "", ""
		if st := v.Status; st != nil {
			if !st.LastRefresh.IsZero() {
				refresh = p.Time(st.LastRefresh)
			}
			if st.Sequence != 0 {
				seq = strconv.FormatUint(st.Sequence, 10)
			}
			errText = st.Error
		}
		t.Row(md.Name, v.Spec.Profile, v.Spec.BundleEndpointURL, refresh, seq, errText)
	case *resource.Lock:
		t.Row(md.Name, v.Spec.Target.String(), v.Spec.Reason, p.lockExpires(v), v.Spec.CreatedBy)
	default:
		t.Row(r.GetKind(), md.Name)
	}
}

func (p *Printer) details(d *Details, r resource.Resource) {
	md := r.GetMetadata()
	d.Field("Kind", r.GetKind())
	d.Field("Name", md.Name)
	d.Field("Description", md.Description)
	d.Field("Labels", labels(md.Labels))
	switch v := r.(type) {
	case *resource.Role:
		d.List("Allow", grants(v.Spec.Allow.SPIFFE))
		d.List("Deny", grants(v.Spec.Deny.SPIFFE))
		d.List("Allow rules", rules(v.Spec.Allow.Rules))
		d.List("Deny rules", rules(v.Spec.Deny.Rules))
		d.Field("Workload identities", selectors(v.Spec.Allow.WorkloadIdentityLabels))
		d.Field("Denied workload identities", selectors(v.Spec.Deny.WorkloadIdentityLabels))
		d.Field("Max SVID TTL", ttl(v.Spec.Options.MaxSVIDTTL))
		d.Field("Max session TTL", ttl(v.Spec.Options.MaxSessionTTL))
	case *resource.User:
		d.Field("Roles", strings.Join(v.Spec.Roles, ", "))
		d.Field("Locked", p.locked(v.Status))
	case *resource.Bot:
		d.Field("Roles", strings.Join(v.Spec.Roles, ", "))
	case *resource.JoinToken:
		d.Field("Bot", v.Spec.Bot)
		d.Field("Method", v.Spec.Method)
		d.Field("Used", uses(v))
		d.Field("Expires", p.Time(v.Spec.Expires))
		if k := v.Spec.Kubernetes; k != nil {
			var allow []string
			for _, a := range k.Allow {
				allow = append(allow, a.ServiceAccount)
			}
			d.Field("Allow", strings.Join(allow, ", "))
			switch {
			case k.TokenReview && k.Cluster != "":
				d.Field("Checked by", "token review by cluster "+k.Cluster)
			case k.TokenReview:
				d.Field("Checked by", "token review")
			case k.Cluster != "":
				d.Field("Checked by", "issuer "+k.Issuer+", issuer keys of cluster "+k.Cluster)
			default:
				d.Field("Checked by", "issuer "+k.Issuer+", keys in the token")
			}
		}
	case *resource.WorkloadIdentity:
		d.Field("SPIFFE ID", v.Spec.SPIFFE.ID)
		d.Field("Hint", v.Spec.SPIFFE.Hint)
		d.Field("X509 DNS SANs", strings.Join(v.Spec.X509.DNSSANs, ", "))
		d.Field("X509 TTL", ttl(v.Spec.X509.TTL))
		d.Field("JWT TTL", ttl(v.Spec.JWT.TTL))
		d.List("Rules", workloadRules(v.Spec.Rules))
		d.Field("Federates with", strings.Join(v.Spec.FederatesWith, ", "))
	case *resource.Federation:
		d.Field("Bundle endpoint", v.Spec.BundleEndpointURL)
		d.Field("Profile", v.Spec.Profile)
		if v.Spec.Profile == resource.ProfileHTTPSSPIFFE {
			if id, err := v.EndpointID(); err == nil {
				d.Field("Endpoint SPIFFE ID", id.String())
			}
		}
		if st := v.Status; st != nil {
			if !st.LastRefresh.IsZero() {
				d.Field("Last refresh", p.Time(st.LastRefresh))
			}
			if !st.LastAttempt.IsZero() {
				d.Field("Last attempt", p.Time(st.LastAttempt))
			}
			if st.Sequence != 0 {
				d.Field("Sequence", strconv.FormatUint(st.Sequence, 10))
			}
			d.Field("Error", st.Error)
		}
	case *resource.Lock:
		d.Field("Target", v.Spec.Target.String())
		d.Field("Reason", v.Spec.Reason)
		d.Field("Expires", p.lockExpires(v))
		d.Field("Created by", v.Spec.CreatedBy)
	}
	if md.Revision != 0 {
		d.Field("Revision", strconv.FormatInt(md.Revision, 10))
	}
}

// locked says whether a user may log in: "-", or until when it is locked
// for everyone, or from how many addresses it is locked out.
func (p *Printer) locked(st *resource.UserStatus) string {
	switch {
	case st == nil:
		return "-"
	case !st.LockedUntil.IsZero():
		return "until " + p.Time(st.LockedUntil)
	case st.LockedSources == 1:
		return "from 1 address"
	case st.LockedSources > 1:
		return fmt.Sprintf("from %d addresses", st.LockedSources)
	}
	return "-"
}

// lockExpires says when a lock ends: "never" (until removed), or the time.
func (p *Printer) lockExpires(l *resource.Lock) string {
	if l.Spec.Expires.IsZero() {
		return "when removed"
	}
	return p.Time(l.Spec.Expires)
}

func ttl(d resource.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func uses(t *resource.JoinToken) string {
	if t.Spec.Method == resource.JoinMethodKubernetes {
		// Reused by every allowed agent; not counted.
		return "-"
	}
	return fmt.Sprintf("%d/%d", t.Spec.Used, t.Spec.Uses)
}

func grantPaths(gs []resource.SPIFFEGrant) string {
	ps := make([]string, len(gs))
	for i, g := range gs {
		ps[i] = g.Path
	}
	return strings.Join(ps, ", ")
}

func grants(gs []resource.SPIFFEGrant) []string {
	out := make([]string, len(gs))
	for i, g := range gs {
		s := g.Path
		if len(g.DNSSANs) > 0 {
			s += "  dns: " + strings.Join(g.DNSSANs, ", ")
		}
		if len(g.IPSANs) > 0 {
			s += "  ip: " + strings.Join(g.IPSANs, ", ")
		}
		out[i] = s
	}
	return out
}

func rules(rs []resource.Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = strings.Join(r.Verbs, ", ") + " on " + strings.Join(r.Resources, ", ")
	}
	return out
}

func labels(m map[string]string) string {
	keys := sortedKeys(m)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k]
	}
	return strings.Join(out, ", ")
}

func selectors(m map[string][]string) string {
	keys := sortedKeys(m)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + " in (" + strings.Join(m[k], ", ") + ")"
	}
	return strings.Join(out, ", ")
}

func workloadRules(r resource.WorkloadRules) []string {
	out := make([]string, len(r.Allow))
	for i, rule := range r.Allow {
		conds := make([]string, len(rule.Conditions))
		for j, c := range rule.Conditions {
			conds[j] = conditionText(c)
		}
		out[i] = "allow if " + strings.Join(conds, " and ")
	}
	return out
}

// ruleSummary is every rule in the form `workload-identity create --rule`
// takes, so that a rule seen in a table can be typed back.
func ruleSummary(r resource.WorkloadRules) string {
	out := make([]string, len(r.Allow))
	for i, rule := range r.Allow {
		out[i] = condition.FormatRule(rule)
	}
	return strings.Join(out, "; ")
}

func conditionText(c resource.Condition) string {
	switch {
	case c.Eq != nil:
		return fmt.Sprintf("%s == %q", c.Attribute, *c.Eq)
	case c.NotEq != nil:
		return fmt.Sprintf("%s != %q", c.Attribute, *c.NotEq)
	case c.In != nil:
		return fmt.Sprintf("%s in (%s)", c.Attribute, strings.Join(c.In, ", "))
	case c.NotIn != nil:
		return fmt.Sprintf("%s not in (%s)", c.Attribute, strings.Join(c.NotIn, ", "))
	case c.Glob != nil:
		return fmt.Sprintf("%s matches %q", c.Attribute, *c.Glob)
	}
	return c.Attribute
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
