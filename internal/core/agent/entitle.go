package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// ConfigSVID is an SVID listed in the agent's own config, as tbot's
// spiffe-workload-api service lists them: no workload identity resource, only
// the bot's SPIFFE path grants decide whether it is issued.
type ConfigSVID struct {
	Path    string                  `yaml:"path"`
	Hint    string                  `yaml:"hint"`
	DNSSANs []string                `yaml:"dns_sans"`
	Rules   []resource.WorkloadRule `yaml:"rules"`
}

// compileConfigSVIDs turns config SVIDs into workload identities named
// config/<n>, so that the same matching and templates apply to both.
func compileConfigSVIDs(svids []ConfigSVID) ([]*rbac.Workload, error) {
	var out []*rbac.Workload
	for i, s := range svids {
		wi := &resource.WorkloadIdentity{
			Header: resource.Header{Kind: resource.KindWorkloadIdentity, Version: resource.V1,
				Metadata: resource.Metadata{Name: fmt.Sprintf("config-%d", i+1)}},
			Spec: resource.WorkloadIdentitySpec{
				SPIFFE: resource.WorkloadSPIFFE{ID: s.Path, Hint: s.Hint},
				X509:   resource.WorkloadX509{DNSSANs: s.DNSSANs},
				Rules:  resource.WorkloadRules{Allow: s.Rules},
			},
		}
		if err := wi.Validate(); err != nil {
			return nil, fmt.Errorf("agent config svids[%d]: %w", i+1, err)
		}
		w, err := rbac.CompileWorkload(wi)
		if err != nil {
			return nil, fmt.Errorf("agent config svids[%d]: %w", i+1, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// entitlement is one SPIFFE ID a workload may have, from a workload identity
// or a config SVID.
type entitlement struct {
	// identity is the workload identity's name; empty for a config SVID.
	identity string
	// config is the config SVID's name (config-N); empty for an identity.
	config  string
	id      spiffeid.ID
	dnsSANs []string
	hint    string
	x509TTL time.Duration
	jwtTTL  time.Duration
	// workload is the compiled identity it came from: a state that keeps
	// the identity's document keeps this pointer, so an unchanged identity
	// is recognised without matching again.
	workload *rbac.Workload
	// key identifies the SVID this entitlement gets: the same identity
	// filled in to the same ID for two processes is one shared SVID, as
	// SPIRE shares an entry's SVID between the workloads it matches.
	key string
}

// entitlements is what one attested workload gets under one state.
type entitlements struct {
	list []entitlement
	// misses say why the first few other identities do not apply, for the
	// audit log and for the error a workload with nothing gets; missed
	// counts them all. Only a few are kept: every attested process has its
	// entitlements cached, and with 10,000 identities held, all their
	// reasons were megabytes per process.
	misses []string
	missed int
	// attestReasons say which attestors added nothing and why (a kubelet
	// that did not answer): the likely cause of misses.
	attestReasons []string
}

func (e *entitlements) ids() []string {
	out := make([]string, len(e.list))
	for i, en := range e.list {
		out[i] = en.id.String()
	}
	return out
}

// showMisses is how many misses reason names, so that a trust domain with
// a thousand identities does not produce a thousand-clause sentence.
const showMisses = 3

// reason summarizes the misses in one line. Attestor failures come first:
// they explain the misses.
func (e *entitlements) reason() string {
	parts := slices.Clone(e.attestReasons)
	parts = append(parts, e.misses...)
	if n := e.missed - len(e.misses); n > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", n))
	}
	return strings.Join(parts, "; ")
}

// entitle matches attrs against the state's identities and the config SVIDs.
func entitle(st *state, config []*rbac.Workload, attrs map[string]string) *entitlements {
	out := &entitlements{}
	now := time.Now()
	add := func(w *rbac.Workload, isConfig bool) {
		en, miss := entitleOne(st.td, w, isConfig, attrs)
		if miss == "" {
			if l := st.lockOf(en.id, now); l != nil {
				miss = lockReason(en.id, l)
			}
		}
		if miss != "" {
			if out.missed++; len(out.misses) < showMisses {
				out.misses = append(out.misses, miss)
			}
			return
		}
		out.list = append(out.list, en)
	}
	for _, w := range st.identities {
		// Once the reasons shown are known, an identity an equality
		// condition rules out is only counted: matching formats a reason,
		// and a process met 10,000 held identities it mostly misses.
		if len(out.misses) >= showMisses && ruledOut(w, attrs) {
			out.missed++
			continue
		}
		add(w, false)
	}
	for _, w := range config {
		add(w, true)
	}
	return out
}

// ruledOut reports whether every allow rule of w has an equality condition
// that attrs fail, so that w cannot select the workload (as Match would
// find, without its reason).
func ruledOut(w *rbac.Workload, attrs map[string]string) bool {
	for _, rule := range w.Identity.Spec.Rules.Allow {
		out := false
		for _, c := range rule.Conditions {
			if c.Eq != nil {
				if v, ok := attrs[c.Attribute]; !ok || v != *c.Eq {
					out = true
					break
				}
			}
		}
		if !out {
			return false
		}
	}
	return true
}

// entitleOne is what w gives a workload with attrs, or why it gives nothing.
func entitleOne(td spiffeid.TrustDomain, w *rbac.Workload, isConfig bool, attrs map[string]string) (entitlement, string) {
	m, miss := w.Match(attrs)
	if miss != nil {
		return entitlement{}, miss.Reason
	}
	id, err := spiffeid.FromPath(td, m.Path)
	if err != nil {
		return entitlement{}, fmt.Sprintf("workload identity %q gives %s, which is not a valid SPIFFE ID path: %v", w.Name(), m.Path, err)
	}
	spec := w.Identity.Spec
	en := entitlement{id: id, dnsSANs: m.DNSSANs, hint: m.Hint, x509TTL: spec.X509.TTL.D(), jwtTTL: spec.JWT.TTL.D(), workload: w}
	if isConfig {
		en.config = w.Name()
	} else {
		en.identity = w.Name()
	}
	en.key = w.Name() + "\x00" + id.String() + "\x00" + strings.Join(m.DNSSANs, ",")
	return en, ""
}

// identityNamed is the state's workload identity called name, or nil.
func (s *state) identityNamed(name string) *rbac.Workload {
	i, ok := slices.BinarySearchFunc(s.identities, name, func(w *rbac.Workload, name string) int { return strings.Compare(w.Name(), name) })
	if !ok {
		return nil
	}
	return s.identities[i]
}

// uniqueHints drops every entitlement whose non-empty hint an earlier one
// already has: the Workload API requires hints to be unique per response.
func uniqueHints(list []entitlement) (kept []entitlement, dropped []entitlement) {
	seen := map[string]bool{}
	for _, en := range list {
		if en.hint != "" {
			if seen[en.hint] {
				dropped = append(dropped, en)
				continue
			}
			seen[en.hint] = true
		}
		kept = append(kept, en)
	}
	return kept, dropped
}
