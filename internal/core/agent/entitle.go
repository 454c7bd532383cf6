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
	// workload is the compiled identity or config SVID it came from.
	workload *rbac.Workload
	// held is the identity it came from (nil for a config SVID): a state
	// that keeps the identity's document keeps this pointer, so an
	// unchanged identity is recognised without matching again.
	held *heldIdentity
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

// entitle matches attrs against the state's identities and the config
// SVIDs. The identities are matched in name order until the reasons shown
// are known; from there only the candidates the index names are matched,
// and the others, which fail an equality in every rule, are only counted.
// The result is what matching every identity in order gives.
func entitle(st *state, config []*rbac.Workload, attrs map[string]string) *entitlements {
	out := &entitlements{}
	now := time.Now()
	locked := func(en entitlement) string {
		if l := st.lockOf(en.id, now); l != nil {
			return lockReason(en.id, l)
		}
		return ""
	}
	miss := func(reason string) {
		if out.missed++; len(out.misses) < showMisses {
			out.misses = append(out.misses, reason)
		}
	}
	entitled := 0
	try := func(h *heldIdentity) {
		w, err := h.workload()
		if err != nil {
			miss(err.Error())
			return
		}
		en, why := entitleOne(st.td, w, false, attrs)
		if why == "" {
			why = locked(en)
		}
		if why != "" {
			miss(why)
			return
		}
		en.held = h
		out.list = append(out.list, en)
		entitled++
	}
	i := 0
	for ; i < len(st.held) && len(out.misses) < showMisses; i++ {
		if st.held[i].err == nil {
			try(st.held[i])
		}
	}
	if i < len(st.held) {
		for _, h := range st.candidates(attrs) {
			if h.err == nil && (i == 0 || h.name > st.held[i-1].name) {
				try(h)
			}
		}
		out.missed = st.served - entitled
	}
	for _, w := range config {
		en, why := entitleOne(st.td, w, true, attrs)
		if why == "" {
			why = locked(en)
		}
		if why != "" {
			miss(why)
			continue
		}
		out.list = append(out.list, en)
	}
	return out
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

// identityNamed is the state's workload identity called name, or nil
// when it holds none it can serve.
func (s *state) identityNamed(name string) *heldIdentity {
	if h := heldNamed(s.held, name); h != nil && h.err == nil {
		return h
	}
	return nil
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
