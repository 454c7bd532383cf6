package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wid-project/wid/internal/core/resource"
)

// Source is an attestor that adds attributes to the unix attestor's, from
// where the caller's cgroups place it: kubernetes, docker, systemd.
type Source interface {
	// Name is the attestor's name in the config and in reasons.
	Name() string
	// Attest returns the attributes of the process p, whose cgroups are cg.
	// It must not block past ctx.
	Attest(ctx context.Context, p Peer, cg Cgroups) (map[string]string, error)
}

// DefaultSourceTimeout bounds each source per call.
const DefaultSourceTimeout = 3 * time.Second

// ChainOptions configures NewChain.
type ChainOptions struct {
	// Unix is the unix attestor; nil leaves workload.unix.* out.
	Unix *Unix
	// Sources run after the unix attestor, all at once.
	Sources []Source
	// ProcRoot is where procfs is mounted; "" means /proc.
	ProcRoot string
	// Timeout bounds each source per call; 0 means DefaultSourceTimeout.
	Timeout time.Duration
	// Logger gets debug records only; nil discards them.
	Logger *slog.Logger
}

// Chain attests with the unix attestor and then with every source. A source
// that fails adds a reason to the Result and no attributes; it does not fail
// the attestation, so that a kubelet that is down costs Kubernetes workloads
// their Kubernetes-based identities but nobody else anything. Only a caller
// gone (ErrProcessGone) fails it. Safe for concurrent use.
type Chain struct {
	unix     *Unix
	sources  []Source
	procRoot string
	timeout  time.Duration
	log      *slog.Logger
}

// NewChain returns a Chain.
func NewChain(opts ChainOptions) *Chain {
	if opts.ProcRoot == "" {
		opts.ProcRoot = DefaultProcRoot
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultSourceTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Chain{unix: opts.Unix, sources: opts.Sources, procRoot: opts.ProcRoot, timeout: opts.Timeout, log: opts.Logger}
}

// Attest returns the unix attestor's Result with the sources' attributes
// added. Result.Reasons says which sources added nothing and why; Result.Key
// covers the added attributes and reasons too.
func (c *Chain) Attest(ctx context.Context, p Peer) (Result, error) {
	var res Result
	if c.unix != nil {
		var err error
		if res, err = c.unix.Attest(ctx, p); err != nil {
			return Result{}, err
		}
	} else {
		res = Result{Attributes: map[string]string{}, Key: strconv.FormatInt(int64(p.PID), 10) + ":" + strconv.FormatUint(p.StartTime, 10)}
	}
	if len(c.sources) == 0 {
		return res, nil
	}
	cg, err := readCgroups(c.procRoot, p)
	if errors.Is(err, ErrProcessGone) {
		return Result{}, err
	}
	type answer struct {
		attrs map[string]string
		err   error
	}
	answers := make([]answer, len(c.sources))
	if err != nil {
		for i := range answers {
			answers[i].err = err
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		done := make(chan struct{}, len(c.sources))
		for i, s := range c.sources {
			go func() {
				defer func() { done <- struct{}{} }()
				attrs, err := s.Attest(ctx, p, cg)
				answers[i] = answer{attrs, err}
			}()
		}
		for range c.sources {
			<-done
		}
	}

	attrs := res.Attributes
	if c.unix != nil {
		// The unix attestor's map may be its memo's: copy before adding.
		attrs = make(map[string]string, len(res.Attributes)+8)
		for k, v := range res.Attributes {
			attrs[k] = v
		}
	}
	h := sha256.New()
	var reasons []string
	for i, s := range c.sources {
		a := answers[i]
		if a.err != nil {
			if errors.Is(a.err, ErrProcessGone) {
				return Result{}, a.err
			}
			if errors.Is(a.err, context.DeadlineExceeded) && ctx.Err() == nil {
				a.err = fmt.Errorf("no answer within %s: %w", c.timeout, a.err)
			}
			reason := s.Name() + " attestor: " + a.err.Error()
			reasons = append(reasons, reason)
			h.Write([]byte(reason))
			h.Write([]byte{0})
			c.log.Debug("attestor added nothing", "attestor", s.Name(), "pid", p.PID, "error", a.err)
			continue
		}
		names := make([]string, 0, len(a.attrs)+1)
		// workload.<source>.attested says the source ran and succeeded,
		// so a rule can tell "not in a pod" from "the kubelet was down".
		a.attrs = maps.Clone(a.attrs)
		if a.attrs == nil {
			a.attrs = map[string]string{}
		}
		a.attrs[AttestedAttribute(s.Name())] = "true"
		for k := range a.attrs {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			attrs[k] = a.attrs[k]
			h.Write([]byte(k))
			h.Write([]byte{0})
			h.Write([]byte(a.attrs[k]))
			h.Write([]byte{0})
		}
	}
	var sum [sha256.Size]byte
	return Result{
		Attributes: attrs,
		Key:        res.Key + "+" + hex.EncodeToString(h.Sum(sum[:0])[:16]),
		Reasons:    reasons,
	}, nil
}

// AttestedAttribute is the attribute that is "true" when the attestor
// named name ran and succeeded: workload.kubernetes.attested, ...
func AttestedAttribute(name string) string { return "workload." + name + ".attested" }

// addLabels adds labels as attributes prefix.<key>. Attribute names are
// lower-case letters, digits, '_' and '-' between dots, so a key is lowered
// and its '/' (as in app.kubernetes.io/name) becomes '.'. A key that still
// is no valid name, or that two keys map to, is left out: a rule cannot name
// it, and a value must never be attributed to the wrong key.
func addLabels(attrs map[string]string, prefix string, labels map[string]string) (skipped []string) {
	owner := make(map[string]string, len(labels))
	for k := range labels {
		name := prefix + "." + strings.ReplaceAll(strings.ToLower(k), "/", ".")
		if resource.ValidateAttribute(name) != nil {
			skipped = append(skipped, k)
			continue
		}
		if other, ok := owner[name]; ok {
			skipped = append(skipped, k)
			if other != "" {
				skipped = append(skipped, other)
			}
			owner[name] = ""
			continue
		}
		owner[name] = k
	}
	for name, k := range owner {
		if k != "" {
			attrs[name] = labels[k]
		}
	}
	slices.Sort(skipped)
	return slices.Compact(skipped)
}
