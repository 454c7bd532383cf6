// Package condition reads and writes the one-line form of workload identity
// rules and workload attributes that widctl's flags and tables use, such as
// "workload.unix.uid=1000,workload.unix.path~/opt/web/*". It only turns text
// into resource conditions and back: the resource package stays the judge
// of a whole workload identity, and this package never talks to the auth
// service.
//
// A rule is one or more conditions separated by commas; all must hold. A
// condition is an attribute, an operator and a value:
//
//	ATTR=VALUE       eq      the attribute is VALUE
//	ATTR!=VALUE      not_eq  the attribute is set and is not VALUE
//	ATTR=A|B|C       in      the attribute is one of A, B, C
//	ATTR!=A|B|C      not_in  the attribute is set and is none of A, B, C
//	ATTR~GLOB        glob    the attribute matches the shell pattern GLOB
//
// Spaces around a condition, its operator and its values are ignored.
// Inside a value, \, is a comma and \| a "|" that does not separate values
// (workload.unix.path=/opt/a\,b/server); every other backslash is
// itself, so glob escapes such as \* keep their meaning.
package condition

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/wid-project/wid/internal/core/resource"
)

// Syntax is the one-line summary of the operators, for help and errors.
const Syntax = "ATTR=VALUE, ATTR!=VALUE, ATTR=A|B|C, ATTR!=A|B|C or ATTR~GLOB"

// ParseRule reads one rule: conditions separated by commas, all of which
// must hold for the rule to match.
func ParseRule(s string) (resource.WorkloadRule, error) {
	if strings.TrimSpace(s) == "" {
		return resource.WorkloadRule{}, fmt.Errorf("the rule is empty: give at least one condition, such as workload.unix.uid=1000")
	}
	pieces := split(s, ',')
	rule := resource.WorkloadRule{Conditions: make([]resource.Condition, 0, len(pieces))}
	for i, p := range pieces {
		if strings.TrimSpace(p) == "" {
			return resource.WorkloadRule{}, fmt.Errorf("condition %d is empty: separate conditions with single commas, with none at the start or end", i+1)
		}
		c, err := parseCondition(p)
		if err != nil {
			return resource.WorkloadRule{}, err
		}
		rule.Conditions = append(rule.Conditions, c)
	}
	return rule, nil
}

// parseCondition reads one condition, its commas already split off.
func parseCondition(s string) (resource.Condition, error) {
	s = strings.TrimSpace(s)
	q := strconv.Quote
	// Attribute names hold only letters, digits, '.', '_' and '-', so the
	// first operator character ends the name.
	i := strings.IndexAny(s, "=!~")
	if i < 0 {
		return resource.Condition{}, fmt.Errorf("condition %s has no operator: write %s (and \\, for a comma inside a value)", q(s), Syntax)
	}
	attr := strings.TrimSpace(s[:i])
	if attr == "" {
		return resource.Condition{}, fmt.Errorf("condition %s names no attribute: write it like workload.unix.uid=1000", q(s))
	}
	if err := resource.ValidateAttribute(attr); err != nil {
		return resource.Condition{}, fmt.Errorf("condition %s: %w", q(s), err)
	}
	var op, rest string
	switch {
	case strings.HasPrefix(s[i:], "!="):
		op, rest = "!=", s[i+2:]
	case strings.HasPrefix(s[i:], "!~"):
		return resource.Condition{}, fmt.Errorf("condition %s negates a glob, which rules cannot do: list the values to exclude with ATTR!=A|B", q(s))
	case s[i] == '!':
		return resource.Condition{}, fmt.Errorf("condition %s has \"!\" without \"=\": write ATTR!=VALUE to exclude a value", q(s))
	default:
		op, rest = s[i:i+1], s[i+1:]
	}
	raw := strings.TrimSpace(rest)
	switch {
	case raw == "":
		return resource.Condition{}, fmt.Errorf("condition %s has no value after %s: write it like %s%s1000", q(s), q(op), attr, op)
	case op != "~" && strings.HasPrefix(raw, "="):
		return resource.Condition{}, fmt.Errorf("condition %s has %s: write a single \"=\" to compare", q(s), q(op+"="))
	case op == "=" && strings.HasPrefix(raw, "~"):
		return resource.Condition{}, fmt.Errorf("condition %s has \"=~\": write ATTR~GLOB to match a pattern", q(s))
	}
	c := resource.Condition{Attribute: attr}
	if op == "~" {
		// In a glob "|" separates nothing, and \| is path.Match's own
		// escape: only commas are unescaped.
		value := strings.ReplaceAll(raw, `\,`, ",")
		if strings.HasSuffix(value, `\`) {
			return resource.Condition{}, fmt.Errorf("condition %s ends in a backslash, which escapes nothing: remove it", q(s))
		}
		if _, err := path.Match(value, ""); err != nil {
			return resource.Condition{}, fmt.Errorf("condition %s: %s is not a valid glob: use *, ? and [a-z] as in shell patterns, and escape a literal [ with \\", q(s), q(value))
		}
		c.Glob = &value
		return c, nil
	}
	values, err := list(s, raw)
	if err != nil {
		return resource.Condition{}, err
	}
	switch {
	case op == "=" && len(values) == 1:
		c.Eq = &values[0]
	case op == "=":
		c.In = values
	case len(values) == 1:
		c.NotEq = &values[0]
	default:
		c.NotIn = values
	}
	return c, nil
}

// list splits A|B|C, refusing empty and repeated values.
func list(cond, raw string) ([]string, error) {
	parts := split(raw, '|')
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		v := unescape(strings.TrimSpace(p))
		if strings.HasSuffix(v, `\`) {
			return nil, fmt.Errorf("condition %s has a value ending in a backslash, which escapes nothing: remove it", strconv.Quote(cond))
		}
		if v == "" {
			return nil, fmt.Errorf("condition %s has an empty value in its list: write the values as A|B|C", strconv.Quote(cond))
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("condition %s lists %s twice: list each value once", strconv.Quote(cond), strconv.Quote(v))
		}
		out = append(out, v)
	}
	return out, nil
}

// split cuts s at every sep that no backslash escapes, keeping escapes in
// the pieces. Only \, and \| are escapes; any other backslash is itself.
func split(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && (s[i+1] == ',' || s[i+1] == '|'):
			i++
		case s[i] == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape turns \, and \| into , and |.
func unescape(s string) string {
	return strings.NewReplacer(`\,`, ",", `\|`, "|").Replace(s)
}

// ParseAttributes reads workload attributes written as
// ATTR=VALUE,ATTR=VALUE, with the escapes of rule values.
func ParseAttributes(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("no attributes given: write them as ATTR=VALUE,ATTR=VALUE, such as workload.unix.uid=1000,workload.unix.user=web")
	}
	attrs := map[string]string{}
	for i, p := range split(s, ',') {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("attribute %d is empty: separate attributes with single commas, with none at the start or end", i+1)
		}
		name, raw, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%s is not ATTR=VALUE: write it like workload.unix.uid=1000 (and \\, for a comma inside a value)", strconv.Quote(p))
		}
		name = strings.TrimSpace(name)
		if err := resource.ValidateAttribute(name); err != nil {
			return nil, err
		}
		if _, dup := attrs[name]; dup {
			return nil, fmt.Errorf("attribute %s is given twice: a workload has one value for each", name)
		}
		v := unescape(strings.TrimSpace(raw))
		if strings.HasSuffix(v, `\`) {
			return nil, fmt.Errorf("attribute %s has a value ending in a backslash, which escapes nothing: remove it", name)
		}
		if v == "" {
			return nil, fmt.Errorf("attribute %s has no value: leave out an attribute the workload does not have", name)
		}
		attrs[name] = v
	}
	return attrs, nil
}

// Format writes c in the form ParseRule reads. A condition with no operator
// (which Validate refuses) prints as its attribute alone.
func Format(c resource.Condition) string {
	switch {
	case c.Eq != nil:
		return c.Attribute + "=" + escape(*c.Eq)
	case c.NotEq != nil:
		return c.Attribute + "!=" + escape(*c.NotEq)
	case c.In != nil:
		return c.Attribute + "=" + escapeAll(c.In)
	case c.NotIn != nil:
		return c.Attribute + "!=" + escapeAll(c.NotIn)
	case c.Glob != nil:
		return c.Attribute + "~" + strings.ReplaceAll(*c.Glob, ",", `\,`)
	}
	return c.Attribute
}

func escape(v string) string {
	return strings.NewReplacer(",", `\,`, "|", `\|`).Replace(v)
}

func escapeAll(vs []string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = escape(v)
	}
	return strings.Join(out, "|")
}

// FormatRule writes r in the form ParseRule reads.
func FormatRule(r resource.WorkloadRule) string {
	out := make([]string, len(r.Conditions))
	for i, c := range r.Conditions {
		out[i] = Format(c)
	}
	return strings.Join(out, ",")
}

// UnixAttributes are the attributes the unix attestor sets, for shell
// completion; validation accepts any well-formed attribute name, since
// other attestors add their own.
var UnixAttributes = []string{
	"workload.unix.pid", "workload.unix.uid", "workload.unix.gid", "workload.unix.path",
	"workload.unix.sha256", "workload.unix.user", "workload.unix.group",
}

// CompleteAttribute offers the unix attribute names for the condition or
// ATTR=VALUE pair being typed at the end of toComplete, after the commas of
// the ones before it. It offers nothing once an operator is typed.
func CompleteAttribute(toComplete string) []string {
	done, last := "", toComplete
	if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
		done, last = toComplete[:i+1], toComplete[i+1:]
	}
	if strings.ContainsAny(last, "=!~") {
		return nil
	}
	var out []string
	for _, a := range UnixAttributes {
		if strings.HasPrefix(a, strings.TrimSpace(last)) {
			out = append(out, done+a)
		}
	}
	return out
}
