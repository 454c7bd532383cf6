// Package audit holds `widctl audit`: reading the trust domain's audit log
// (ls), following it live (tail) and checking its hash chain (verify).
package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	coreaudit "github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdAudit builds the `widctl audit` group.
func NewCmdAudit(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "audit <command>",
		Short: "Read, follow and verify the audit log",
		Long: `Every SVID issued or denied, every join, login and resource change is an
audit event. Events are append-only and hash-chained: "widctl audit verify"
finds an edited, missing or reordered event.`,
		Example: `  widctl audit ls --since 1h --outcome denied
  widctl audit tail
  widctl audit verify`,
	})
	cmd.AddCommand(NewCmdList(f, nil), NewCmdTail(f, nil), NewCmdVerify(f, nil))
	return cmd
}

// Event is an audit event as widctl prints it in JSON and YAML. The field
// names are those of the audit log itself and are stable.
type Event struct {
	Seq        int64             `json:"seq" yaml:"seq"`
	Time       time.Time         `json:"time" yaml:"time"`
	Type       string            `json:"type" yaml:"type"`
	Actor      string            `json:"actor" yaml:"actor"`
	Host       string            `json:"host,omitempty" yaml:"host,omitempty"`
	RemoteAddr string            `json:"remote_addr,omitempty" yaml:"remote_addr,omitempty"`
	SPIFFEID   string            `json:"spiffe_id,omitempty" yaml:"spiffe_id,omitempty"`
	SVIDType   string            `json:"svid_type,omitempty" yaml:"svid_type,omitempty"`
	Serial     string            `json:"serial,omitempty" yaml:"serial,omitempty"`
	TTLSeconds int64             `json:"ttl_seconds,omitempty" yaml:"ttl_seconds,omitempty"`
	DNSSANs    []string          `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	IPSANs     []string          `json:"ip_sans,omitempty" yaml:"ip_sans,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty" yaml:"attributes,omitempty"`
	Outcome    string            `json:"outcome" yaml:"outcome"`
	Reason     string            `json:"reason,omitempty" yaml:"reason,omitempty"`
	Resource   string            `json:"resource,omitempty" yaml:"resource,omitempty"`
	Details    map[string]string `json:"details,omitempty" yaml:"details,omitempty"`
	PrevHash   string            `json:"prev_hash,omitempty" yaml:"prev_hash,omitempty"`
	Hash       string            `json:"hash,omitempty" yaml:"hash,omitempty"`
}

// NewEvent converts the wire form.
func NewEvent(e *authv1.AuditEvent) Event {
	return Event{
		Seq:        e.GetSeq(),
		Time:       e.GetTime().AsTime().UTC(),
		Type:       e.GetType(),
		Actor:      e.GetActor(),
		Host:       e.GetHost(),
		RemoteAddr: e.GetRemoteAddr(),
		SPIFFEID:   e.GetSpiffeId(),
		SVIDType:   e.GetSvidType(),
		Serial:     e.GetSerial(),
		TTLSeconds: e.GetTtlSeconds(),
		DNSSANs:    e.GetDnsSans(),
		IPSANs:     e.GetIpSans(),
		Attributes: e.GetAttributes(),
		Outcome:    e.GetOutcome(),
		Reason:     e.GetReason(),
		Resource:   e.GetResource(),
		Details:    e.GetDetails(),
		PrevHash:   e.GetPrevHash(),
		Hash:       e.GetHash(),
	}
}

// headers are the text columns of ls and tail.
var headers = []string{"time", "type", "actor", "spiffe id", "outcome", "reason"}

// cells are an event's text columns. Resource changes have no SPIFFE ID or
// reason; what changed goes in the reason column so that the row says it.
func (e Event) cells() []string {
	reason := e.Reason
	if reason == "" && e.Resource != "" {
		reason = e.Resource
	}
	return []string{e.Time.UTC().Format(time.RFC3339), e.Type, e.Actor, e.SPIFFEID, e.Outcome, reason}
}

// Filter selects events; ls and tail share it.
type Filter struct {
	Types    []string
	Actor    string
	SPIFFEID string
	Outcome  string
}

func (flt *Filter) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&flt.Types, "type", nil, "only events of `TYPE`, e.g. svid.denied or resource.created (repeatable)")
	fs.StringVar(&flt.Actor, "actor", "", "only events by `ACTOR`, as audit ls shows it: bot:web-agent, alice or admin@HOST")
	fs.StringVar(&flt.SPIFFEID, "spiffe-id", "", "only events about this SPIFFE `ID` (or path)")
	fs.StringVar(&flt.Outcome, "outcome", "", "only events with this `OUTCOME`: success, denied or error")
}

var outcomes = []string{coreaudit.OutcomeSuccess, coreaudit.OutcomeDenied, coreaudit.OutcomeError}

func (flt *Filter) check() error {
	if flt.Outcome != "" && !contains(outcomes, flt.Outcome) {
		return cmdutil.InputErrorf("--outcome %q is unknown: use %s or %s", flt.Outcome, strings.Join(outcomes[:len(outcomes)-1], ", "), outcomes[len(outcomes)-1])
	}
	if flt.SPIFFEID != "" {
		if err := cmdutil.CheckSPIFFEID(flt.SPIFFEID); err != nil {
			return cmdutil.InputErrorf("--spiffe-id: %v", err)
		}
	}
	for _, t := range flt.Types {
		if strings.TrimSpace(t) == "" {
			return cmdutil.InputErrorf("--type is empty: give an event type such as svid.denied")
		}
		if !slices.Contains(coreaudit.Types, t) {
			if near := cmdutil.Nearest(t, coreaudit.Types); near != "" {
				return cmdutil.InputErrorf("--type %q is not an event type (did you mean %q?): docs/audit.md lists them", t, near)
			}
			return cmdutil.InputErrorf("--type %q is not an event type: use one of %s", t, strings.Join(coreaudit.Types, ", "))
		}
	}
	return nil
}

func (flt *Filter) query() *authv1.AuditQuery {
	return &authv1.AuditQuery{Types: flt.Types, Actor: flt.Actor, SpiffeId: flt.SPIFFEID, Outcome: flt.Outcome}
}

// resolve turns a bare path in --spiffe-id into the full SPIFFE ID, which
// is what events record, in the auth service's trust domain.
func (flt *Filter) resolve(ctx context.Context, c *client.Client) error {
	if !strings.HasPrefix(flt.SPIFFEID, "/") {
		return nil
	}
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(ping.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("the auth service's trust domain %q is invalid: %w", ping.GetTrustDomain(), err)
	}
	id, err := resource.ParseSPIFFEID(td, flt.SPIFFEID)
	if err != nil {
		return cmdutil.InputErrorf("--spiffe-id: %v", err)
	}
	flt.SPIFFEID = id.String()
	return nil
}

// ParseTime reads --since and --until: a duration back from now (1h, 30m)
// or an RFC 3339 time.
func ParseTime(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, cmdutil.InputErrorf("--%s %q is neither a duration back from now (like 30m or 24h) nor a time (like 2026-01-02T15:04:05Z)", flag, s)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
