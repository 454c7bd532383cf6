package resource

import (
	"fmt"
	"regexp"
	"strings"
)

// Template is a string with placeholders for workload attributes, as in a
// workload identity's SPIFFE ID path: /svc/web/{{ workload.kubernetes.namespace }}.
// A placeholder may be a whole segment or part of one (/uid-{{ workload.unix.uid }}).
type Template struct {
	source string
	parts  []templatePart
}

// templatePart is a literal, or a placeholder when attribute is set.
type templatePart struct {
	literal   string
	attribute string
}

// attributeRE is a workload attribute name: workload.<attestor>.<name>...
var attributeRE = regexp.MustCompile(`^workload(\.[a-z0-9_-]+)+$`)

// ValidateAttribute checks a workload attribute name such as workload.unix.uid.
func ValidateAttribute(name string) error {
	if !attributeRE.MatchString(name) {
		return fmt.Errorf("attribute %s is not a workload attribute: write it like workload.unix.uid, with lower-case letters, digits, '_' and '-' between the dots", quote(name))
	}
	return nil
}

// ParseTemplate reads a template; the errors say which placeholder is wrong.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{source: s}
	rest := s
	for rest != "" {
		open := strings.Index(rest, "{{")
		if end := strings.Index(rest, "}}"); end >= 0 && (open < 0 || end < open) {
			return nil, fmt.Errorf("template %s has \"}}\" without a matching \"{{\": write placeholders as {{ workload.unix.uid }}", quote(s))
		}
		if open < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:open]})
		}
		rest = rest[open+2:]
		end := strings.Index(rest, "}}")
		if end < 0 {
			return nil, fmt.Errorf("template %s has \"{{\" without a closing \"}}\": write placeholders as {{ workload.unix.uid }}", quote(s))
		}
		name := strings.TrimSpace(rest[:end])
		if strings.Contains(name, "{{") {
			return nil, fmt.Errorf("template %s has a placeholder inside a placeholder: write placeholders as {{ workload.unix.uid }}", quote(s))
		}
		if err := ValidateAttribute(name); err != nil {
			return nil, fmt.Errorf("template %s: %w", quote(s), err)
		}
		t.parts = append(t.parts, templatePart{attribute: name})
		rest = rest[end+2:]
	}
	return t, nil
}

// String returns the template as written.
func (t *Template) String() string { return t.source }

// Attributes lists the attributes the template uses, in order, without repeats.
func (t *Template) Attributes() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range t.parts {
		if p.attribute != "" && !seen[p.attribute] {
			seen[p.attribute] = true
			out = append(out, p.attribute)
		}
	}
	return out
}

// fill replaces every placeholder with value; validation uses it to check
// the literal parts in place.
func (t *Template) fill(value string) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.attribute != "" {
			b.WriteString(value)
		} else {
			b.WriteString(p.literal)
		}
	}
	return b.String()
}

// render substitutes attrs; check vets each value before it is used.
func (t *Template) render(attrs map[string]string, check func(name, value string) error) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.attribute == "" {
			b.WriteString(p.literal)
			continue
		}
		v, ok := attrs[p.attribute]
		if !ok || v == "" {
			// An empty value would silently drop a path segment or a label.
			return "", fmt.Errorf("attribute %s is not set for this workload, so %s cannot be filled in", p.attribute, quote(t.source))
		}
		if err := check(p.attribute, v); err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// RenderPath fills in a SPIFFE ID path template. A value may not contain "/"
// so that an attribute a workload controls can never add path segments; the
// result must be a valid SPIFFE ID path.
func (t *Template) RenderPath(attrs map[string]string) (string, error) {
	p, err := t.render(attrs, func(name, value string) error {
		if strings.Contains(value, "/") {
			return fmt.Errorf("attribute %s is %s, which contains \"/\" and cannot be part of one path segment", name, quote(value))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := ValidateSPIFFEIDPath(p); err != nil {
		return "", fmt.Errorf("filling in %s: %w", quote(t.source), err)
	}
	return p, nil
}

// RenderDNSSAN fills in a DNS SAN template; the result must be a valid DNS SAN.
func (t *Template) RenderDNSSAN(attrs map[string]string) (string, error) {
	s, err := t.render(attrs, func(string, string) error { return nil })
	if err != nil {
		return "", err
	}
	if err := ValidateDNSSAN(s); err != nil {
		return "", fmt.Errorf("filling in %s: %w", quote(t.source), err)
	}
	return s, nil
}
