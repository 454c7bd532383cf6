// Package resource defines wid's resources (roles, users, bots, join tokens,
// workload identities) in the kind/version/metadata/spec form, and decodes
// them from YAML or JSON strictly. It never talks to a store or the network.
package resource

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Kinds of resources.
const (
	KindRole             = "role"
	KindUser             = "user"
	KindBot              = "bot"
	KindJoinToken        = "token"
	KindWorkloadIdentity = "workload_identity"
	KindFederation       = "trust_domain_federation"
)

// V1 is the only resource version so far.
const V1 = "v1"

// Kinds lists every kind users may create, get and remove, in display order.
var Kinds = []string{KindRole, KindUser, KindBot, KindJoinToken, KindWorkloadIdentity, KindFederation, KindLock}

// kindAliases maps what people type to a kind.
var kindAliases = map[string]string{
	"role": KindRole, "roles": KindRole,
	"user": KindUser, "users": KindUser,
	"bot": KindBot, "bots": KindBot,
	"token": KindJoinToken, "tokens": KindJoinToken, "join_token": KindJoinToken,
	"workload_identity": KindWorkloadIdentity, "workload_identities": KindWorkloadIdentity,
	"workload-identity": KindWorkloadIdentity, "wi": KindWorkloadIdentity,
	"trust_domain_federation": KindFederation, "trust_domain_federations": KindFederation,
	"federation": KindFederation, "federations": KindFederation,
	"lock": KindLock, "locks": KindLock,
}

// NormalizeKind returns the canonical kind for k, or an error naming the known kinds.
func NormalizeKind(k string) (string, error) {
	if c, ok := kindAliases[strings.ToLower(strings.TrimSpace(k))]; ok {
		return c, nil
	}
	return "", fmt.Errorf("unknown kind %q: use one of %s", k, strings.Join(Kinds, ", "))
}

// Metadata is common to every resource.
type Metadata struct {
	Name        string            `json:"name" yaml:"name"`
	Description string            `json:"description,omitempty" yaml:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	// Revision is set by the store; it increases with every change.
	Revision int64 `json:"revision,omitempty" yaml:"revision,omitempty"`
}

// Resource is any wid resource.
type Resource interface {
	GetKind() string
	GetVersion() string
	GetMetadata() *Metadata
	// Validate checks the resource as a whole; errors name the offending field.
	Validate() error
}

// Header is embedded by every resource type.
type Header struct {
	Kind     string   `json:"kind" yaml:"kind"`
	Version  string   `json:"version" yaml:"version"`
	Metadata Metadata `json:"metadata" yaml:"metadata"`
}

func (h *Header) GetKind() string        { return h.Kind }
func (h *Header) GetVersion() string     { return h.Version }
func (h *Header) GetMetadata() *Metadata { return &h.Metadata }

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

func (h *Header) validateHeader(kind string) error {
	res := resourceName(kind, h.Metadata.Name)
	if h.Kind != kind {
		return &FieldError{Resource: res, Field: "kind", Message: fmt.Sprintf("kind is %q but this is a %s: set kind: %s", h.Kind, kind, kind)}
	}
	if h.Version == "" {
		return &FieldError{Resource: res, Field: "version", Message: fmt.Sprintf("version is missing: add version: %s", V1)}
	}
	if h.Version != V1 {
		return &FieldError{Resource: res, Field: "version", Message: fmt.Sprintf("version %q is not supported: use version: %s", h.Version, V1)}
	}
	if err := ValidateName(h.Metadata.Name); err != nil {
		// The name itself is what is wrong, so the error names the kind only.
		return &FieldError{Resource: kind, Field: "metadata.name", Message: "metadata.name: " + err.Error()}
	}
	// Sorted, so that the same file always gets the same error.
	for _, k := range slices.Sorted(maps.Keys(h.Metadata.Labels)) {
		if err := ValidateLabelKey(k); err != nil {
			return &FieldError{Resource: res, Field: "metadata.labels", Message: "metadata.labels: " + err.Error()}
		}
	}
	return nil
}

var labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$`)

// ValidateLabelKey checks a label name. Label names are selected on by
// roles, so they are plain words, as in Kubernetes (app.example.com/tier).
func ValidateLabelKey(k string) error {
	if k == "" {
		return fmt.Errorf("a label has an empty name: give every label a name")
	}
	if !labelKeyRE.MatchString(k) {
		return fmt.Errorf("label name %q is invalid: use up to 253 letters, digits, '.', '_', '-' or '/', starting and ending with a letter or digit", k)
	}
	return nil
}

// ValidateName checks a resource name.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("a name is required: use 1-63 lower-case letters, digits, '.', '_' or '-'")
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q is invalid: use 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Ref is "kind/name".
func Ref(r Resource) string { return r.GetKind() + "/" + r.GetMetadata().Name }

// ParseRef splits "kind/name" and normalizes the kind.
func ParseRef(s string) (kind, name string, err error) {
	k, n, ok := strings.Cut(s, "/")
	if !ok || k == "" || n == "" {
		return "", "", fmt.Errorf("%q is not KIND/NAME: write it as role/NAME, user/NAME, bot/NAME, token/NAME, workload_identity/NAME or lock/NAME", s)
	}
	kind, err = NormalizeKind(k)
	if err != nil {
		return "", "", err
	}
	return kind, n, nil
}

// New returns an empty resource of the given kind.
func New(kind string) (Resource, error) {
	switch kind {
	case KindRole:
		return &Role{}, nil
	case KindUser:
		return &User{}, nil
	case KindBot:
		return &Bot{}, nil
	case KindJoinToken:
		return &JoinToken{}, nil
	case KindWorkloadIdentity:
		return &WorkloadIdentity{}, nil
	case KindFederation:
		return &Federation{}, nil
	case KindLock:
		return &Lock{}, nil
	}
	_, err := NormalizeKind(kind)
	return nil, err
}

// Role grants SPIFFE paths and admin rules. See rbac for their meaning.
type Role struct {
	Header `json:",inline" yaml:",inline"`
	Spec   RoleSpec `json:"spec" yaml:"spec"`
}

type RoleSpec struct {
	Allow   RoleConditions `json:"allow,omitempty,omitzero" yaml:"allow,omitempty"`
	Deny    RoleConditions `json:"deny,omitempty,omitzero" yaml:"deny,omitempty"`
	Options RoleOptions    `json:"options,omitempty,omitzero" yaml:"options,omitempty"`
}

type RoleConditions struct {
	SPIFFE []SPIFFEGrant `json:"spiffe,omitempty" yaml:"spiffe,omitempty"`
	Rules  []Rule        `json:"rules,omitempty" yaml:"rules,omitempty"`
	// WorkloadIdentityLabels selects the workload identities a bot may issue:
	// every listed label must have one of the listed values ("*" matches any).
	WorkloadIdentityLabels map[string][]string `json:"workload_identity_labels,omitempty" yaml:"workload_identity_labels,omitempty"`
}

// SPIFFEGrant is a SPIFFE ID path pattern with the SANs it allows.
type SPIFFEGrant struct {
	// Path is exact (/svc/web), with * for one segment (/svc/*) or a final ** for any depth (/svc/**).
	Path    string   `json:"path" yaml:"path"`
	DNSSANs []string `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	IPSANs  []string `json:"ip_sans,omitempty" yaml:"ip_sans,omitempty"`
}

// Rule allows or denies verbs on resource kinds for admin operations.
type Rule struct {
	Resources []string `json:"resources" yaml:"resources"`
	Verbs     []string `json:"verbs" yaml:"verbs"`
}

type RoleOptions struct {
	MaxSVIDTTL    Duration `json:"max_svid_ttl,omitempty" yaml:"max_svid_ttl,omitempty"`
	MaxSessionTTL Duration `json:"max_session_ttl,omitempty" yaml:"max_session_ttl,omitempty"`
}

// User is a person who logs in with widctl.
type User struct {
	Header `json:",inline" yaml:",inline"`
	Spec   UserSpec `json:"spec" yaml:"spec"`
	// Status is what the auth service reports about the user when it is
	// read: it is never stored, and the auth service drops it from what it
	// is sent, so the output of widctl get goes back into widctl create -f.
	Status *UserStatus `json:"status,omitempty" yaml:"status,omitempty"`
}

// UserStatus says whether a user is locked out of logging in. It holds
// nothing secret: no hash, no second factor, no address.
type UserStatus struct {
	// LockedUntil is when the lock for everyone ends; zero when there is none.
	LockedUntil time.Time `json:"locked_until,omitzero" yaml:"locked_until,omitempty"`
	// LockedSources counts the addresses locked out of this user alone.
	LockedSources int `json:"locked_sources,omitempty" yaml:"locked_sources,omitempty"`
}

type UserSpec struct {
	Roles []string `json:"roles" yaml:"roles"`
}

// Bot is a machine identity: an agent joins as a bot.
type Bot struct {
	Header `json:",inline" yaml:",inline"`
	Spec   BotSpec `json:"spec" yaml:"spec"`
}

type BotSpec struct {
	Roles []string `json:"roles" yaml:"roles"`
}

// Join methods.
const (
	JoinMethodToken      = "token"
	JoinMethodKubernetes = "kubernetes"
)

// JoinToken lets a bot join. A token-method token's name is derived from the
// secret's hash and the secret itself is never stored. A kubernetes-method
// token has no secret: it is named by its creator, reused by every node that
// presents an allowed service-account token, and never counts its uses.
type JoinToken struct {
	Header `json:",inline" yaml:",inline"`
	Spec   JoinTokenSpec `json:"spec" yaml:"spec"`
}

type JoinTokenSpec struct {
	Bot    string `json:"bot" yaml:"bot"`
	Method string `json:"method" yaml:"method"`
	// Uses and Used count the joins of a token-method token; a kubernetes
	// token leaves them out.
	Uses    int       `json:"uses,omitempty" yaml:"uses,omitempty"`
	Used    int       `json:"used,omitempty" yaml:"used,omitempty"`
	Expires time.Time `json:"expires,omitzero" yaml:"expires,omitempty"`
	// SecretHash is the hex SHA-256 of the secret.
	SecretHash string `json:"secret_hash,omitempty" yaml:"secret_hash,omitempty"`
	// Kubernetes configures the kubernetes join method.
	Kubernetes *KubernetesJoin `json:"kubernetes,omitempty" yaml:"kubernetes,omitempty"`
	// X509Pop configures the x509pop join method.
	X509Pop *X509PopJoin `json:"x509pop,omitempty" yaml:"x509pop,omitempty"`
}

// WorkloadIdentity says which SPIFFE ID a matching workload gets.
type WorkloadIdentity struct {
	Header `json:",inline" yaml:",inline"`
	Spec   WorkloadIdentitySpec `json:"spec" yaml:"spec"`
}

type WorkloadIdentitySpec struct {
	SPIFFE WorkloadSPIFFE `json:"spiffe" yaml:"spiffe"`
	X509   WorkloadX509   `json:"x509,omitempty,omitzero" yaml:"x509,omitempty"`
	JWT    WorkloadJWT    `json:"jwt,omitempty,omitzero" yaml:"jwt,omitempty"`
	Rules  WorkloadRules  `json:"rules,omitempty,omitzero" yaml:"rules,omitempty"`
	// FederatesWith names foreign trust domains whose bundles this
	// identity's workloads get, so that they accept peers of those domains.
	FederatesWith []string `json:"federates_with,omitempty" yaml:"federates_with,omitempty"`
}

type WorkloadSPIFFE struct {
	// ID is a SPIFFE ID path template, e.g. /svc/web/{{ workload.unix.uid }}.
	ID   string `json:"id" yaml:"id"`
	Hint string `json:"hint,omitempty" yaml:"hint,omitempty"`
}

type WorkloadX509 struct {
	DNSSANs []string `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	TTL     Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

type WorkloadJWT struct {
	TTL Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

type WorkloadRules struct {
	Allow []WorkloadRule `json:"allow,omitempty" yaml:"allow,omitempty"`
}

type WorkloadRule struct {
	Conditions []Condition `json:"conditions" yaml:"conditions"`
}

// Condition tests one workload attribute; exactly one operator is set.
type Condition struct {
	Attribute string   `json:"attribute" yaml:"attribute"`
	Eq        *string  `json:"eq,omitempty" yaml:"eq,omitempty"`
	NotEq     *string  `json:"not_eq,omitempty" yaml:"not_eq,omitempty"`
	In        []string `json:"in,omitempty" yaml:"in,omitempty"`
	NotIn     []string `json:"not_in,omitempty" yaml:"not_in,omitempty"`
	Glob      *string  `json:"glob,omitempty" yaml:"glob,omitempty"`
}
