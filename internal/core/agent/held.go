package agent

import (
	"bytes"
	"cmp"
	"compress/flate"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unique"

	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
)

// heldIdentity is one workload identity pushed to the agent. An agent holds
// every identity its bot's roles select, most of them for workloads on
// other hosts of the bot, so an identity is kept as its deflated document
// and compiled only once the index names it a candidate for a workload
// here: compiled rules and templates of 10,000 held identities were most
// of an agent's memory. A state that keeps an identity unchanged keeps
// this pointer, so what was compiled carries over.
type heldIdentity struct {
	name string
	// doc is the document as pushed, deflated against docDictionary.
	// Deflating is deterministic: an equal doc is the same document.
	doc []byte
	// err says why the identity cannot be served (its templates do not
	// compile); such an identity is never matched.
	err error
	w   atomic.Pointer[rbac.Workload]
}

// workload is the identity compiled, compiling it the first time.
func (h *heldIdentity) workload() (*rbac.Workload, error) {
	if w := h.w.Load(); w != nil {
		return w, nil
	}
	doc, err := inflateDoc(h.doc)
	if err != nil {
		return nil, fmt.Errorf("workload identity %q: inflating its document: %w", h.name, err)
	}
	wi, err := decodeIdentity(doc)
	if err != nil {
		return nil, err
	}
	w, err := rbac.CompileWorkload(wi)
	if err != nil {
		return nil, err
	}
	if !h.w.CompareAndSwap(nil, w) {
		w = h.w.Load()
	}
	return w, nil
}

// decodeIdentity decodes one pushed workload identity document.
func decodeIdentity(doc []byte) (*resource.WorkloadIdentity, error) {
	v, err := resource.UnmarshalStored(doc)
	if err != nil {
		return nil, fmt.Errorf("decoding a workload identity: %w", err)
	}
	wi, ok := v.(*resource.WorkloadIdentity)
	if !ok {
		return nil, fmt.Errorf("auth service sent a %s where a workload identity was expected", v.GetKind())
	}
	return wi, nil
}

// docDictionary is what workload identity documents repeat, so that one
// document of a few hundred bytes deflates to a few dozen.
const docDictionary = `{"attribute":"workload.systemd.unit","glob":""},{"attribute":"workload.docker.image","not_in":[]},` +
	`{"attribute":"workload.kubernetes.service_account","not_eq":""},{"attribute":"workload.kubernetes.namespace","in":[""]},` +
	`{"attribute":"workload.unix.path","glob":""},{"attribute":"workload.unix.gid","eq":""},` +
	`{"kind":"workload_identity","version":"v1","metadata":{"name":"","description":"","labels":{},"revision":},` +
	`"spec":{"spiffe":{"id":"/{{ workload.kubernetes.namespace }}/{{ workload.kubernetes.service_account }}/{{ workload.unix.uid }}","hint":""},` +
	`"x509":{"dns_sans":[""],"ttl":"1h"},"jwt":{"ttl":"5m"},"rules":{"allow":[{"conditions":[{"attribute":"workload.unix.uid","eq":"`

var (
	deflaters = sync.Pool{New: func() any {
		w, err := flate.NewWriterDict(io.Discard, flate.BestCompression, []byte(docDictionary))
		if err != nil {
			panic(err) // only for a bad level
		}
		return w
	}}
	inflaters = sync.Pool{New: func() any { return flate.NewReaderDict(bytes.NewReader(nil), []byte(docDictionary)) }}
)

// deflateDoc is doc deflated against docDictionary, in a slice of its own.
func deflateDoc(doc []byte) []byte {
	var buf bytes.Buffer
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&buf)
	// A bytes.Buffer takes every write.
	_, _ = w.Write(doc)
	_ = w.Close()
	deflaters.Put(w)
	return bytes.Clone(buf.Bytes())
}

func inflateDoc(packed []byte) ([]byte, error) {
	r := inflaters.Get().(io.ReadCloser)
	defer inflaters.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(packed), []byte(docDictionary)); err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// anyAttr is the attribute of the index entries of identities that the
// index cannot narrow: they are candidates for every workload.
var anyAttr = unique.Make("")

// indexEntry says that id may select a workload whose attribute attr is
// value, and none whose attribute is missing or another value (unless id
// has another entry that fits). Handles share the strings that thousands
// of identities repeat.
type indexEntry struct {
	attr, value unique.Handle[string]
	id          *heldIdentity
}

func compareEntries(a, b indexEntry) int {
	return cmp.Or(strings.Compare(a.attr.Value(), b.attr.Value()), strings.Compare(a.value.Value(), b.value.Value()),
		strings.Compare(a.id.name, b.id.name))
}

// indexEntries are the entries of h, whose decoded document is wi. Every
// allow rule of wi needs one of its conditions to hold; a rule with an eq
// or in condition can match only a workload whose attribute has that value
// or one of those, so h is entered under those values. A rule without one
// makes h a candidate for every workload. The condition taken is the one
// rbac's Match tests with the same operator: the first set of eq, not_eq,
// in, not_in, glob.
func indexEntries(h *heldIdentity, wi *resource.WorkloadIdentity) []indexEntry {
	var out []indexEntry
	for _, rule := range wi.Spec.Rules.Allow {
		var best *resource.Condition
		for j := range rule.Conditions {
			c := &rule.Conditions[j]
			switch {
			case c.Eq != nil:
				best = c
			case c.NotEq != nil:
			case c.In != nil:
				if best == nil || len(c.In) < len(best.In) {
					best = c
				}
			}
			if best != nil && best.Eq != nil {
				break
			}
		}
		if best == nil {
			return []indexEntry{{attr: anyAttr, value: anyAttr, id: h}}
		}
		attr := unique.Make(best.Attribute)
		if best.Eq != nil {
			out = append(out, indexEntry{attr: attr, value: unique.Make(*best.Eq), id: h})
			continue
		}
		// An empty in list: the rule matches nothing and adds no entry.
		for _, v := range best.In {
			out = append(out, indexEntry{attr: attr, value: unique.Make(v), id: h})
		}
	}
	return out
}

// buildIndex is the index of held (sorted by name): the entries of prev
// and fresh whose identities held has (a name sent twice is held once).
func buildIndex(held []*heldIdentity, prev *state, fresh []indexEntry) []indexEntry {
	n := len(fresh)
	if prev != nil {
		n += len(prev.index)
	}
	out := make([]indexEntry, 0, n)
	keep := func(entries []indexEntry) {
		for _, e := range entries {
			if heldNamed(held, e.id.name) == e.id {
				out = append(out, e)
			}
		}
	}
	if prev != nil {
		keep(prev.index)
	}
	if len(fresh) == 0 {
		return out // prev's order is kept
	}
	keep(fresh)
	slices.SortFunc(out, compareEntries)
	return out
}

// candidates are the identities of st that may select a workload with
// attrs, sorted by name: every other identity has a rule-by-rule equality
// it fails.
func (s *state) candidates(attrs map[string]string) []*heldIdentity {
	var out []*heldIdentity
	lookup := func(attr, value string) {
		i, _ := slices.BinarySearchFunc(s.index, [2]string{attr, value}, func(e indexEntry, k [2]string) int {
			return cmp.Or(strings.Compare(e.attr.Value(), k[0]), strings.Compare(e.value.Value(), k[1]))
		})
		for ; i < len(s.index) && s.index[i].attr.Value() == attr && s.index[i].value.Value() == value; i++ {
			out = append(out, s.index[i].id)
		}
	}
	lookup("", "")
	for a, v := range attrs {
		if a != "" {
			lookup(a, v)
		}
	}
	slices.SortFunc(out, func(a, b *heldIdentity) int { return strings.Compare(a.name, b.name) })
	return slices.Compact(out)
}

// heldNamed is the identity of held (sorted by name) called name, or nil.
func heldNamed(held []*heldIdentity, name string) *heldIdentity {
	i, ok := slices.BinarySearchFunc(held, name, func(h *heldIdentity, name string) int { return strings.Compare(h.name, name) })
	if !ok {
		return nil
	}
	return held[i]
}
