package resource

import (
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Verbs of admin rules.
const (
	VerbCreate = "create"
	VerbRead   = "read"
	VerbList   = "list"
	VerbUpdate = "update"
	VerbDelete = "delete"
)

// Wildcard in a rule's resources or verbs stands for all of them.
const Wildcard = "*"

// Verbs lists the verbs rules may name, besides Wildcard.
var Verbs = []string{VerbCreate, VerbRead, VerbList, VerbUpdate, VerbDelete}

// Things that rules guard besides the resource kinds.
const (
	ResourceAudit         = "audit"
	ResourceBundle        = "bundle"
	ResourceCertAuthority = "cert_authority"
	ResourceSVID          = "svid"
)

// RuleResources lists what rules may name, besides Wildcard: every kind, the
// audit log, the bundle, the certificate authorities and SVID issuance.
var RuleResources = append(slices.Clone(Kinds), ResourceAudit, ResourceBundle, ResourceCertAuthority, ResourceSVID)

// MaxSVIDTTL is the longest life of any SVID. A role's options.max_svid_ttl
// may lower it, never raise it: a stolen SVID must expire within a day.
const MaxSVIDTTL = 24 * time.Hour

// MaxHintLength is the longest workload identity hint, in characters.
const MaxHintLength = 64

// Validate checks the role; the error names the offending field.
func (r *Role) Validate() error {
	if err := r.validateHeader(KindRole); err != nil {
		return err
	}
	res := resourceName(KindRole, r.Metadata.Name)
	if err := r.Spec.Allow.validate(res, "spec.allow"); err != nil {
		return err
	}
	if err := r.Spec.Deny.validate(res, "spec.deny"); err != nil {
		return err
	}
	o := r.Spec.Options
	if o.MaxSVIDTTL < 0 {
		return fieldErrorf(res, "spec.options.max_svid_ttl", "%s is negative: give a positive duration such as 1h", o.MaxSVIDTTL)
	}
	if o.MaxSVIDTTL.D() > MaxSVIDTTL {
		return fieldErrorf(res, "spec.options.max_svid_ttl", "%s is over the %s that any SVID may live: set %s or less", o.MaxSVIDTTL, FormatDuration(MaxSVIDTTL), FormatDuration(MaxSVIDTTL))
	}
	if o.MaxSessionTTL < 0 {
		return fieldErrorf(res, "spec.options.max_session_ttl", "%s is negative: give a positive duration such as 12h", o.MaxSessionTTL)
	}
	return nil
}

func (c *RoleConditions) validate(res, field string) error {
	for i, g := range c.SPIFFE {
		f := fmt.Sprintf("%s.spiffe[%d]", field, i+1)
		if problem := pathPatternProblem(g.Path); problem != "" {
			return fieldErrorf(res, f+".path", "%s %s", quote(g.Path), problem)
		}
		for j, d := range g.DNSSANs {
			if problem := dnsProblem(d); problem != "" {
				return fieldErrorf(res, fmt.Sprintf("%s.dns_sans[%d]", f, j+1), "%s %s", quote(d), problem)
			}
		}
		for j, ip := range g.IPSANs {
			if _, err := ParseIPRange(ip); err != nil {
				ff := fmt.Sprintf("%s.ip_sans[%d]", f, j+1)
				return &FieldError{Resource: res, Field: ff, Message: ff + ": " + err.Error()}
			}
		}
	}
	for i, rule := range c.Rules {
		f := fmt.Sprintf("%s.rules[%d]", field, i+1)
		if len(rule.Resources) == 0 {
			return fieldErrorf(res, f+".resources", "is empty: list what the rule is about, e.g. [role], or [\"*\"] for everything")
		}
		for j, r := range rule.Resources {
			if r != Wildcard && !slices.Contains(RuleResources, r) {
				return fieldErrorf(res, fmt.Sprintf("%s.resources[%d]", f, j+1), "%s is not something rules guard: use one of %s, or \"*\"", quote(r), strings.Join(RuleResources, ", "))
			}
		}
		if len(rule.Verbs) == 0 {
			return fieldErrorf(res, f+".verbs", "is empty: list the verbs, e.g. [read, list], or [\"*\"] for all")
		}
		for j, v := range rule.Verbs {
			if v != Wildcard && !slices.Contains(Verbs, v) {
				return fieldErrorf(res, fmt.Sprintf("%s.verbs[%d]", f, j+1), "%s is not a verb: use one of %s, or \"*\"", quote(v), strings.Join(Verbs, ", "))
			}
		}
	}
	f := field + ".workload_identity_labels"
	// Sorted, so that the same file always gets the same error.
	for _, k := range slices.Sorted(maps.Keys(c.WorkloadIdentityLabels)) {
		values := c.WorkloadIdentityLabels[k]
		if k != Wildcard {
			if err := ValidateLabelKey(k); err != nil {
				return &FieldError{Resource: res, Field: f, Message: f + ": " + err.Error()}
			}
		}
		switch {
		case len(values) == 0:
			return fieldErrorf(res, f, "label %s lists no values, so it selects nothing: list values, or [\"*\"] for any value", quote(k))
		case k == Wildcard && !(len(values) == 1 && values[0] == Wildcard):
			return fieldErrorf(res, f, "label \"*\" may only be used as \"*\": [\"*\"], which selects every workload identity")
		}
	}
	return nil
}

// IsZero lets omitempty drop an empty allow or deny section.
func (c RoleConditions) IsZero() bool {
	return len(c.SPIFFE) == 0 && len(c.Rules) == 0 && len(c.WorkloadIdentityLabels) == 0
}

// IsZero lets omitempty drop empty options.
func (o RoleOptions) IsZero() bool { return o.MaxSVIDTTL == 0 && o.MaxSessionTTL == 0 }

// Validate checks the user; the error names the offending field.
func (u *User) Validate() error {
	if err := u.validateHeader(KindUser); err != nil {
		return err
	}
	return validateRoleNames(resourceName(KindUser, u.Metadata.Name), u.Spec.Roles)
}

// Validate checks the bot; the error names the offending field.
func (b *Bot) Validate() error {
	if err := b.validateHeader(KindBot); err != nil {
		return err
	}
	return validateRoleNames(resourceName(KindBot, b.Metadata.Name), b.Spec.Roles)
}

func validateRoleNames(res string, roles []string) error {
	for i, name := range roles {
		if err := ValidateName(name); err != nil {
			f := fmt.Sprintf("spec.roles[%d]", i+1)
			return &FieldError{Resource: res, Field: f, Message: f + ": role " + err.Error()}
		}
		if slices.Contains(roles[:i], name) {
			return fieldErrorf(res, fmt.Sprintf("spec.roles[%d]", i+1), "repeats the role %q: list each role once", name)
		}
	}
	return nil
}

// Validate checks the join token; the error names the offending field.
func (t *JoinToken) Validate() error {
	if err := t.validateHeader(KindJoinToken); err != nil {
		return err
	}
	res := resourceName(KindJoinToken, t.Metadata.Name)
	s := t.Spec
	if err := ValidateName(s.Bot); err != nil {
		return &FieldError{Resource: res, Field: "spec.bot", Message: "spec.bot: bot " + err.Error()}
	}
	switch s.Method {
	case JoinMethodToken, JoinMethodKubernetes, JoinMethodX509Pop:
	case "":
		return fieldErrorf(res, "spec.method", "is missing: use %s, %s or %s", JoinMethodToken, JoinMethodKubernetes, JoinMethodX509Pop)
	default:
		return fieldErrorf(res, "spec.method", "%s is not a join method: use %s, %s or %s", quote(s.Method), JoinMethodToken, JoinMethodKubernetes, JoinMethodX509Pop)
	}
	if s.Method == JoinMethodX509Pop {
		return t.validateX509Pop(res)
	}
	if s.X509Pop != nil {
		return fieldErrorf(res, "spec.x509pop", "is only for method %s: remove it, or set method: %s", JoinMethodX509Pop, JoinMethodX509Pop)
	}
	if s.Method == JoinMethodKubernetes {
		return t.validateKubernetes(res)
	}
	if s.Kubernetes != nil {
		return fieldErrorf(res, "spec.kubernetes", "is only for method %s: remove it, or set method: %s", JoinMethodKubernetes, JoinMethodKubernetes)
	}
	if s.Uses < 1 {
		return fieldErrorf(res, "spec.uses", "%d would let no bot join: set uses to 1 or more", s.Uses)
	}
	if s.Used < 0 {
		return fieldErrorf(res, "spec.used", "%d is negative: a token is used 0 or more times", s.Used)
	}
	if s.Used > s.Uses {
		return fieldErrorf(res, "spec.used", "%d is over spec.uses %d: a token cannot be used more often than it allows", s.Used, s.Uses)
	}
	if s.Expires.IsZero() {
		return fieldErrorf(res, "spec.expires", "is missing: set when the token stops working, e.g. %s", time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC).Format(time.RFC3339))
	}
	if s.SecretHash != "" {
		if b, err := hex.DecodeString(s.SecretHash); err != nil || len(b) != 32 || strings.ToLower(s.SecretHash) != s.SecretHash {
			return fieldErrorf(res, "spec.secret_hash", "%s is not a SHA-256 in lower-case hex: leave it out and let wid set it", quote(s.SecretHash))
		}
	}
	return nil
}

// validateKubernetes checks a kubernetes-method token: named, reusable,
// without a secret, and with a way to check service-account tokens.
func (t *JoinToken) validateKubernetes(res string) error {
	s := t.Spec
	if s.Kubernetes == nil {
		return fieldErrorf(res, "spec.kubernetes", "is missing: a kubernetes join token needs allow (the service accounts that may join) and issuer with jwks or cluster, or token_review: true")
	}
	if s.SecretHash != "" {
		return fieldErrorf(res, "spec.secret_hash", "is set, but a kubernetes join token has no secret: remove it")
	}
	if s.Uses != 0 || s.Used != 0 {
		return fieldErrorf(res, "spec.uses", "is set, but a kubernetes join token is reused by every node that joins with it: remove uses and used")
	}
	return s.Kubernetes.validate(res)
}

// Validate checks the workload identity; the error names the offending field.
func (w *WorkloadIdentity) Validate() error {
	if err := w.validateHeader(KindWorkloadIdentity); err != nil {
		return err
	}
	res := resourceName(KindWorkloadIdentity, w.Metadata.Name)
	s := w.Spec
	if err := validateIDTemplate(s.SPIFFE.ID); err != nil {
		return &FieldError{Resource: res, Field: "spec.spiffe.id", Message: "spec.spiffe.id " + err.Error()}
	}
	if n := utf8.RuneCountInString(s.SPIFFE.Hint); n > MaxHintLength {
		return fieldErrorf(res, "spec.spiffe.hint", "is %d characters long, over the limit of %d: shorten it", n, MaxHintLength)
	}
	for i, d := range s.X509.DNSSANs {
		f := fmt.Sprintf("spec.x509.dns_sans[%d]", i+1)
		t, err := ParseTemplate(d)
		if err != nil {
			return &FieldError{Resource: res, Field: f, Message: f + ": " + err.Error()}
		}
		// A placeholder stands for one label here, which is how most
		// attributes (namespaces, service accounts) fill it in.
		if problem := dnsProblem(t.fill("x")); problem != "" {
			return fieldErrorf(res, f, "%s %s", quote(d), problem)
		}
	}
	if s.X509.TTL < 0 {
		return fieldErrorf(res, "spec.x509.ttl", "%s is negative: give a positive duration such as 1h", s.X509.TTL)
	}
	if s.JWT.TTL < 0 {
		return fieldErrorf(res, "spec.jwt.ttl", "%s is negative: give a positive duration such as 5m", s.JWT.TTL)
	}
	if err := validateFederatesWith(res, s.FederatesWith); err != nil {
		return err
	}
	if len(s.Rules.Allow) == 0 {
		return fieldErrorf(res, "spec.rules.allow", "is empty: a workload identity with no rules would match every process on every agent, so add a rule with at least one condition, such as {attribute: workload.unix.uid, eq: \"1000\"}")
	}
	for i, rule := range s.Rules.Allow {
		f := fmt.Sprintf("spec.rules.allow[%d]", i+1)
		if len(rule.Conditions) == 0 {
			return fieldErrorf(res, f+".conditions", "is empty: a rule with no conditions matches every process, so add at least one condition")
		}
		for j := range rule.Conditions {
			if err := rule.Conditions[j].validate(res, fmt.Sprintf("%s.conditions[%d]", f, j+1)); err != nil {
				return err
			}
		}
	}
	return nil
}

// validateIDTemplate checks a SPIFFE ID path template; its error text
// follows the field name.
func validateIDTemplate(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("is missing: give a path such as /svc/web or /uid/{{ workload.unix.uid }}")
	case strings.HasPrefix(strings.ToLower(id), spiffeScheme):
		return fmt.Errorf("%s is a full SPIFFE ID: write only the path, such as /svc/web; the trust domain is added when the SVID is issued", quote(id))
	case len(id) > MaxSPIFFEIDLength:
		return fmt.Errorf("%s is %d bytes long, over the limit of %d bytes: shorten it", quote(id), len(id), MaxSPIFFEIDLength)
	}
	t, err := ParseTemplate(id)
	if err != nil {
		return fmt.Errorf("is invalid: %w", err)
	}
	// Each placeholder becomes a plain letter, so go-spiffe judges the
	// literal parts where they stand.
	if problem := spiffePathProblem(t.fill("x")); problem != "" {
		return fmt.Errorf("%s %s", quote(id), problem)
	}
	return nil
}

func (c *Condition) validate(res, field string) error {
	if c.Attribute == "" {
		return fieldErrorf(res, field+".attribute", "is missing: name the workload attribute to test, such as workload.unix.uid")
	}
	if err := ValidateAttribute(c.Attribute); err != nil {
		f := field + ".attribute"
		return &FieldError{Resource: res, Field: f, Message: f + ": " + err.Error()}
	}
	var ops []string
	if c.Eq != nil {
		ops = append(ops, "eq")
	}
	if c.NotEq != nil {
		ops = append(ops, "not_eq")
	}
	if c.In != nil {
		ops = append(ops, "in")
	}
	if c.NotIn != nil {
		ops = append(ops, "not_in")
	}
	if c.Glob != nil {
		ops = append(ops, "glob")
	}
	switch len(ops) {
	case 0:
		return fieldErrorf(res, field, "has no operator: set exactly one of eq, not_eq, in, not_in or glob")
	case 1:
	default:
		return fieldErrorf(res, field, "sets %s: set exactly one of eq, not_eq, in, not_in or glob, and split the rest into more conditions", strings.Join(ops, " and "))
	}
	switch {
	case c.In != nil && len(c.In) == 0:
		return fieldErrorf(res, field+".in", "is empty, so it matches nothing: list at least one value")
	case c.NotIn != nil && len(c.NotIn) == 0:
		return fieldErrorf(res, field+".not_in", "is empty, so it excludes nothing: list at least one value, or use another operator")
	case c.Glob != nil:
		// path.Match reports a malformed pattern whatever the name, so
		// matching the empty string checks the whole pattern.
		if _, err := path.Match(*c.Glob, ""); err != nil {
			return fieldErrorf(res, field+".glob", "%s is not a valid glob: use *, ? and [a-z] as in shell patterns, and escape a literal [ with \\", quote(*c.Glob))
		}
	}
	return nil
}

// IsZero lets omitempty drop an empty x509 section.
func (x WorkloadX509) IsZero() bool { return len(x.DNSSANs) == 0 && x.TTL == 0 }

// IsZero lets omitempty drop an empty jwt section.
func (j WorkloadJWT) IsZero() bool { return j.TTL == 0 }

// IsZero lets omitempty drop an empty rules section.
func (r WorkloadRules) IsZero() bool { return len(r.Allow) == 0 }
