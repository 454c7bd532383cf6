// Package ca holds `widctl ca`: the trust domain's certificate authorities
// and their rotation.
package ca

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	coreca "github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var typeNames = []string{"spiffe", "jwt", "wit", "user", "host"}

// NewCmdCA builds the `widctl ca` group.
func NewCmdCA(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "ca <command>",
		Short: "List the trust domain's CAs, rotate them, put the spiffe CA under an upstream CA",
		Long: `List the trust domain's certificate authorities and rotate them.

Each CA type rotates on its own through the phases
standby -> init -> update_clients -> update_servers -> standby:
  init            new keys join the trust bundle; the old keys still sign
  update_clients  the new keys sign; agents renew every SVID at once
  update_servers  the old keys still verify; everything in use is new
  standby         the old keys leave the bundle and are deleted
rollback (from init, update_clients or update_servers) makes the old keys
sign again and returns to standby once agents have renewed.
A phase change waits for every agent seen in the last --agent-window.

The spiffe CA can be an intermediate of your own root CA (an upstream CA):
see widctl ca import and widctl ca csr.`,
		Example: `  widctl ca ls
  widctl ca rotate --type spiffe --phase init
  widctl ca rotate --type spiffe --grace-period 30h
  widctl ca status --type spiffe
  widctl ca import --type spiffe --cert root.pem --key root.key`,
	})
	cmd.AddCommand(NewCmdList(f, nil), NewCmdStatus(f, nil), NewCmdRotate(f, nil), NewCmdImport(f, nil), NewCmdCSR(f, nil))
	return cmd
}

// ListOptions are the settings of `widctl ca ls`.
type ListOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)
}

// NewCmdList builds `widctl ca ls`.
func NewCmdList(f *cmdutil.Factory, runF func(*ListOptions) error) *cobra.Command {
	opts := &ListOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	return &cobra.Command{
		Use:     "ls",
		Short:   "List each CA: phase, mode, keys, sequence",
		Example: "  widctl ca ls\n  widctl ca ls --format json",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return listRun(cmd.Context(), opts)
		},
	}
}

// CA is one CA as widctl prints it in JSON and YAML.
type CA struct {
	Type            string     `json:"type" yaml:"type"`
	Phase           string     `json:"phase" yaml:"phase"`
	Mode            string     `json:"mode" yaml:"mode"`
	Sequence        int64      `json:"sequence" yaml:"sequence"`
	Keys            []Key      `json:"keys" yaml:"keys"`
	RotationStarted *time.Time `json:"rotation_started,omitempty" yaml:"rotation_started,omitempty"`
	PhaseStarted    *time.Time `json:"phase_started,omitempty" yaml:"phase_started,omitempty"`
	GracePeriod     string     `json:"grace_period,omitempty" yaml:"grace_period,omitempty"`
	NextPhase       string     `json:"next_phase,omitempty" yaml:"next_phase,omitempty"`
	NextStepAt      *time.Time `json:"next_step_at,omitempty" yaml:"next_step_at,omitempty"`
	RolledBackFrom  string     `json:"rolled_back_from,omitempty" yaml:"rolled_back_from,omitempty"`
	// Upstream is key or csr when the CA is under an upstream CA.
	Upstream string `json:"upstream,omitempty" yaml:"upstream,omitempty"`
	// Waiting says what the CA waits for before a rotation can go on.
	Waiting string `json:"waiting,omitempty" yaml:"waiting,omitempty"`
}

// Key is one key set of a CA.
type Key struct {
	ID          string    `json:"id" yaml:"id"`
	State       string    `json:"state" yaml:"state"`
	Algorithm   string    `json:"algorithm" yaml:"algorithm"`
	Fingerprint string    `json:"fingerprint" yaml:"fingerprint"`
	KID         string    `json:"kid,omitempty" yaml:"kid,omitempty"`
	NotBefore   time.Time `json:"not_before" yaml:"not_before"`
	NotAfter    time.Time `json:"not_after" yaml:"not_after"`
}

func timePtr(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}

func fromProto(in *authv1.CAInfo) CA {
	out := CA{
		Type: in.Type, Phase: in.Phase, Mode: in.Mode, Sequence: in.Sequence,
		RotationStarted: timePtr(in.RotationStarted), PhaseStarted: timePtr(in.PhaseStarted),
		NextPhase: in.NextPhase, NextStepAt: timePtr(in.NextStepAt), RolledBackFrom: in.RolledBackFrom,
		Upstream: in.Upstream, Waiting: in.Waiting,
	}
	if in.GracePeriodSeconds > 0 {
		out.GracePeriod = resource.FormatDuration(time.Duration(in.GracePeriodSeconds) * time.Second)
	}
	for _, k := range in.Keys {
		out.Keys = append(out.Keys, Key{
			ID: k.Id, State: k.State, Algorithm: k.Algorithm, Fingerprint: k.Fingerprint, KID: k.Kid,
			NotBefore: k.NotBefore.AsTime(), NotAfter: k.NotAfter.AsTime(),
		})
	}
	return out
}

// keysOf returns the fingerprints of a CA's keys in one state, shortened.
func keysOf(c CA, state string) string {
	var out []string
	for _, k := range c.Keys {
		if k.State == state {
			out = append(out, short(k.Fingerprint))
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// short keeps a fingerprint's first 16 hex digits: enough to tell keys apart.
func short(fp string) string {
	const n = len("sha256:") + 16
	if len(fp) > n {
		return fp[:n]
	}
	return fp
}

func activeNotAfter(c CA) time.Time {
	for _, k := range c.Keys {
		if k.State == "active" {
			return k.NotAfter
		}
	}
	return time.Time{}
}

func listRun(ctx context.Context, opts *ListOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.ListCAs(ctx, &authv1.ListCAsRequest{})
	if err != nil {
		return err
	}
	cas := make([]CA, len(resp.Cas))
	for i, in := range resp.Cas {
		cas[i] = fromProto(in)
	}
	return p.Print(cas, func(w io.Writer) error {
		t := output.NewTable(w, "TYPE", "PHASE", "MODE", "SEQ", "ACTIVE KEY", "ADDITIONAL", "NOT AFTER")
		for _, ca := range cas {
			t.Row(ca.Type, ca.Phase, ca.Mode, fmt.Sprint(ca.Sequence), keysOf(ca, "active"), keysOf(ca, "additional"), p.Time(activeNotAfter(ca)))
		}
		return t.Flush()
	})
}

// StatusOptions are the settings of `widctl ca status`.
type StatusOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Type        string
	AgentWindow resource.Duration
}

// NewCmdStatus builds `widctl ca status`.
func NewCmdStatus(f *cmdutil.Factory, runF func(*StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "status [--type TYPE]",
		Short: "Show each CA's rotation: phase, time in phase, next step, agents and laggards",
		Long: `Show each CA's rotation: its phase and how long it has been in it, when an
automatic rotation moves on, and every agent seen in the last --agent-window
with the CA sequence it holds, the key that signed what it serves, and
whether it holds the next phase back.`,
		Example: "  widctl ca status\n  widctl ca status --type spiffe --format json",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Type != "" {
				if _, err := coreca.ParseType(opts.Type); err != nil {
					return cmdutil.InputError(err)
				}
			}
			if runF != nil {
				return runF(opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Type, "type", "", "show only the CA of `TYPE`: spiffe, jwt, wit, user or host")
	cmdutil.DurationVar(cmd.Flags(), &opts.AgentWindow, "agent-window", "count agents seen within `DURATION` (default 10m)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(typeNames, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Status is one CA's rotation status as widctl prints it.
type Status struct {
	CA      `yaml:",inline"`
	Agents  []AgentState `json:"agents" yaml:"agents"`
	Blocked string       `json:"blocked,omitempty" yaml:"blocked,omitempty"`
}

// AgentState is one agent as a CA's status shows it.
type AgentState struct {
	Bot       string    `json:"bot" yaml:"bot"`
	Host      string    `json:"host" yaml:"host"`
	Connected bool      `json:"connected" yaml:"connected"`
	LastSeen  time.Time `json:"last_seen" yaml:"last_seen"`
	Sequence  int64     `json:"sequence" yaml:"sequence"`
	SignedBy  string    `json:"signed_by,omitempty" yaml:"signed_by,omitempty"`
	Lagging   bool      `json:"lagging" yaml:"lagging"`
	Reason    string    `json:"reason,omitempty" yaml:"reason,omitempty"`
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.GetCAStatus(ctx, &authv1.GetCAStatusRequest{Type: opts.Type, AgentWindowSeconds: int64(opts.AgentWindow.D() / time.Second)})
	if err != nil {
		return err
	}
	out := make([]Status, len(resp.Cas))
	for i, in := range resp.Cas {
		out[i] = Status{CA: fromProto(in.Ca), Blocked: in.Blocked, Agents: []AgentState{}}
		for _, a := range in.Agents {
			out[i].Agents = append(out[i].Agents, AgentState{
				Bot: a.Bot, Host: a.Host, Connected: a.Connected, LastSeen: a.LastSeen.AsTime(),
				Sequence: a.Sequence, SignedBy: a.SignedBy, Lagging: a.Lagging, Reason: a.Reason,
			})
		}
	}
	return p.Print(out, func(w io.Writer) error {
		for i, st := range out {
			if i > 0 {
				fmt.Fprintln(w)
			}
			d := output.NewDetails(w)
			d.Field("CA", st.Type)
			d.Field("Phase", st.Phase)
			d.Field("Mode", st.Mode)
			d.Field("Sequence", fmt.Sprint(st.Sequence))
			if st.PhaseStarted != nil && st.Phase != "standby" {
				d.Field("In phase since", p.Time(*st.PhaseStarted))
			}
			if st.NextPhase != "" {
				next := st.NextPhase
				if st.NextStepAt != nil {
					next += " at " + p.Time(*st.NextStepAt)
				} else {
					next += " when you run widctl ca rotate --type " + st.Type + " --phase " + st.NextPhase
				}
				if st.Phase == "rollback" {
					next = "standby as soon as no agent lags"
				}
				d.Field("Next", next)
			}
			if st.Upstream != "" {
				d.Field("Upstream CA", map[string]string{"key": "yes, wid holds its key", "csr": "yes, its key is offline (CSR mode)"}[st.Upstream])
			}
			if st.Waiting != "" {
				d.Field("Waiting for", st.Waiting)
			}
			d.Field("Active key", keysOf(st.CA, "active"))
			d.Field("Additional keys", keysOf(st.CA, "additional"))
			if st.Blocked != "" {
				d.Field("Blocked", st.Blocked)
			}
			if err := d.Flush(); err != nil {
				return err
			}
			if len(st.Agents) == 0 {
				fmt.Fprintln(w, "No agent seen in the window.")
				continue
			}
			t := output.NewTable(w, "AGENT", "HOST", "CONNECTED", "LAST SEEN", "SEQ", "LAGGING")
			for _, a := range st.Agents {
				lag := "no"
				if a.Lagging {
					lag = "yes: " + a.Reason
				}
				t.Row(a.Bot, a.Host, yesNo(a.Connected), p.Time(a.LastSeen), fmt.Sprint(a.Sequence), lag)
			}
			if err := t.Flush(); err != nil {
				return err
			}
		}
		return nil
	})
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// RotateOptions are the settings of `widctl ca rotate`.
type RotateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Type        string
	Phase       string
	Manual      bool
	Force       bool
	GracePeriod resource.Duration
	AgentWindow resource.Duration
}

// NewCmdRotate builds `widctl ca rotate`.
func NewCmdRotate(f *cmdutil.Factory, runF func(*RotateOptions) error) *cobra.Command {
	opts := &RotateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "rotate --type TYPE|all (--phase PHASE [--manual] | --grace-period DURATION) [--force]",
		Short: "Move a CA to the next rotation phase, or start an automatic rotation",
		Long: `Move a CA (or all of them) to a rotation phase.

Manual mode: you move the phases, in order:
  init -> update_clients -> update_servers -> standby
and rollback from any of the middle three. Automatic mode (--grace-period)
starts at init and moves on by itself; the grace period must be at least the
longest life any role lets an SVID of that CA have. The old key stays trusted
after it stops signing for two thirds of the grace period or that life,
whichever is longer (half in update_clients, half in update_servers); init
has the rest.

A phase change that agents must follow first (init -> update_clients, and
every step that removes keys) is refused while an agent seen within
--agent-window lags, naming it. --force moves on anyway and is audited as
forced.`,
		Example: `  widctl ca rotate --type spiffe --phase init
  widctl ca rotate --type spiffe --phase update_clients
  widctl ca rotate --type all --phase init
  widctl ca rotate --type spiffe --phase rollback
  widctl ca rotate --type jwt --grace-period 30h`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := opts.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return rotateRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.Type, "type", "", "the CA `TYPE` to rotate: spiffe, jwt, wit, user, host or all")
	cmd.Flags().StringVar(&opts.Phase, "phase", "", "the `PHASE` to move to: init, update_clients, update_servers, standby or rollback")
	cmd.Flags().BoolVar(&opts.Manual, "manual", false, "start a manual rotation (the default without --grace-period)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "move on although agents lag (audited as forced)")
	cmdutil.DurationVar(cmd.Flags(), &opts.GracePeriod, "grace-period", "start an automatic rotation lasting `DURATION`")
	cmdutil.DurationVar(cmd.Flags(), &opts.AgentWindow, "agent-window", "wait for agents seen within `DURATION` (default 10m)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(append(typeNames, "all"), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("phase", cobra.FixedCompletions([]string{"init", "update_clients", "update_servers", "standby", "rollback"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (opts *RotateOptions) check() error {
	if opts.Type == "" {
		return cmdutil.InputErrorf("say which CA with --type: spiffe, jwt, wit, user, host or all")
	}
	if !strings.EqualFold(opts.Type, "all") {
		if _, err := coreca.ParseType(opts.Type); err != nil {
			return cmdutil.InputErrorf("%s, or all", err)
		}
	}
	if opts.Phase != "" {
		if _, err := coreca.ParsePhase(opts.Phase); err != nil {
			return cmdutil.InputError(err)
		}
	}
	switch {
	case opts.GracePeriod.D() > 0 && opts.Manual:
		return cmdutil.InputErrorf("--grace-period starts an automatic rotation: drop --manual, or drop --grace-period and move the phases yourself")
	case opts.Phase == "" && opts.GracePeriod.D() == 0:
		return cmdutil.InputErrorf("say which phase to move to with --phase (init, update_clients, update_servers, standby or rollback), or start an automatic rotation with --grace-period")
	}
	return nil
}

// Step is one phase change as widctl prints it.
type Step struct {
	Type           string   `json:"type" yaml:"type"`
	From           string   `json:"from" yaml:"from"`
	To             string   `json:"to" yaml:"to"`
	Sequence       int64    `json:"sequence" yaml:"sequence"`
	OldFingerprint string   `json:"old_fingerprint,omitempty" yaml:"old_fingerprint,omitempty"`
	NewFingerprint string   `json:"new_fingerprint,omitempty" yaml:"new_fingerprint,omitempty"`
	Forced         bool     `json:"forced,omitempty" yaml:"forced,omitempty"`
	Laggards       []string `json:"laggards,omitempty" yaml:"laggards,omitempty"`
}

func rotateRun(ctx context.Context, opts *RotateOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	req := &authv1.RotateCARequest{
		Type: strings.ToLower(opts.Type), Phase: strings.ToLower(opts.Phase), Force: opts.Force,
		GracePeriodSeconds: int64(opts.GracePeriod.D() / time.Second), AgentWindowSeconds: int64(opts.AgentWindow.D() / time.Second),
	}
	if opts.Manual {
		req.Mode = "manual"
	}
	resp, err := c.RotateCA(ctx, req)
	if err != nil {
		return err
	}
	steps := make([]Step, len(resp.Steps))
	for i, s := range resp.Steps {
		steps[i] = Step{Type: s.Type, From: s.From, To: s.To, Sequence: s.Sequence, OldFingerprint: s.OldFingerprint,
			NewFingerprint: s.NewFingerprint, Forced: s.Forced, Laggards: s.Laggards}
	}
	for _, wt := range resp.Waiting {
		// The rotation cannot start by itself: say so on stderr as well,
		// so that a script reading the JSON steps still sees it.
		fmt.Fprintf(opts.IO.ErrOut, "The %s CA's upstream key is offline: its rotation waits for a signature of the new intermediate (key %s).\n", wt.Type, short(wt.Fingerprint))
		fmt.Fprintf(opts.IO.ErrOut, "Sign the CSR below with the upstream CA (widctl ca csr --type %s -o FILE writes it again), then run: widctl ca import --type %s --cert signed.pem\n", wt.Type, wt.Type)
		fmt.Fprint(opts.IO.ErrOut, string(wt.CsrPem))
	}
	return p.Print(steps, func(w io.Writer) error {
		for i, s := range steps {
			line := fmt.Sprintf("The %s CA moved from %s to %s (sequence %d", s.Type, s.From, s.To, s.Sequence)
			if s.To == "init" && i < len(resp.Cas) && resp.Cas[i].Mode == "auto" {
				line += fmt.Sprintf(", automatic: next step at %s", p.Time(resp.Cas[i].NextStepAt.AsTime()))
			}
			fmt.Fprintln(w, line+").")
			if s.NewFingerprint != "" {
				fmt.Fprintf(w, "  old key %s, new key %s\n", short(s.OldFingerprint), short(s.NewFingerprint))
			}
			if s.Forced {
				fmt.Fprintf(w, "  forced past lagging agents: %s\n", strings.Join(s.Laggards, ", "))
			}
		}
		return nil
	})
}
