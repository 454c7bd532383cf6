package login

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/loginstore"
	"github.com/wid-project/wid/internal/core/resource"
)

// StatusOptions are the settings of `widctl status`.
type StatusOptions struct {
	IO      *iostreams.IOStreams
	Printer func() (*output.Printer, error)
	Logins  *loginstore.LoginStore
	Now     func() time.Time
	// Logger gets debug records (--debug); read once flags are parsed.
	Logger func() *slog.Logger
}

// NewCmdStatus builds `widctl status`.
func NewCmdStatus(f *cmdutil.Factory, runF func(*StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IOStreams, Printer: f.Printer, Logins: f.Logins, Now: time.Now, Logger: f.Logger}
	return &cobra.Command{
		Use:   "status",
		Short: "Show who you are logged in as and what you may issue",
		Long: `Show your login: the auth service, your user and roles, the SPIFFE ID paths
your roles let you issue (with their SAN and TTL limits), and when the login
expires.`,
		Example: `  widctl status
  widctl status --format json`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return statusRun(cmd.Context(), opts)
		},
	}
}

// Grant is one SPIFFE path a user may issue, with its limits.
type Grant struct {
	Role       string   `json:"role" yaml:"role"`
	Path       string   `json:"path" yaml:"path"`
	DNSSANs    []string `json:"dns_sans,omitempty" yaml:"dns_sans,omitempty"`
	IPSANs     []string `json:"ip_sans,omitempty" yaml:"ip_sans,omitempty"`
	MaxSVIDTTL string   `json:"max_svid_ttl,omitempty" yaml:"max_svid_ttl,omitempty"`
	Deny       bool     `json:"deny,omitempty" yaml:"deny,omitempty"`
}

// Status is what `widctl status` prints; its JSON and YAML names are stable.
type Status struct {
	User string `json:"user" yaml:"user"`
	Auth string `json:"auth" yaml:"auth"`
	// Replica is the address of the replica that answered, one of Auth's.
	Replica     string    `json:"replica" yaml:"replica"`
	TrustDomain string    `json:"trust_domain" yaml:"trust_domain"`
	Roles       []string  `json:"roles" yaml:"roles"`
	Expires     time.Time `json:"expires" yaml:"expires"`
	KeyStore    string    `json:"key_store" yaml:"key_store"`
	Grants      []Grant   `json:"grants" yaml:"grants"`
}

func statusRun(ctx context.Context, opts *StatusOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	prof, err := opts.Logins.Profile()
	if errors.Is(err, loginstore.ErrNoLogin) {
		return &cmdutil.Error{Code: cmdutil.ExitAuth, Message: "you are not logged in: run widctl login --auth HOST:PORT --user NAME"}
	}
	if err != nil {
		return cmdutil.InputError(err)
	}
	id, err := cmdutil.LoginIdentity(opts.Logins, prof, opts.Now())
	if err != nil {
		return err
	}
	c, id, err := cmdutil.DialLogin(ctx, opts.Logins, prof, id, opts.Logger())
	if err != nil {
		return err
	}
	defer c.Close()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		return err
	}
	st := &Status{User: ping.IdentityName, Auth: prof.Auth, Replica: c.Current(), TrustDomain: ping.TrustDomain, Roles: ping.Roles, Expires: id.Expires().UTC(), KeyStore: prof.KeyStore, Grants: []Grant{}}
	for _, name := range ping.Roles {
		r, err := cmdutil.GetResource(ctx, c, resource.KindRole, name)
		if err != nil {
			return err
		}
		role, ok := r.(*resource.Role)
		if !ok {
			return fmt.Errorf("role/%s came back as a %s", name, r.GetKind())
		}
		ttl := ""
		if role.Spec.Options.MaxSVIDTTL > 0 {
			ttl = resource.FormatDuration(role.Spec.Options.MaxSVIDTTL.D())
		}
		for _, g := range role.Spec.Allow.SPIFFE {
			st.Grants = append(st.Grants, Grant{Role: name, Path: g.Path, DNSSANs: g.DNSSANs, IPSANs: g.IPSANs, MaxSVIDTTL: ttl})
		}
		for _, g := range role.Spec.Deny.SPIFFE {
			st.Grants = append(st.Grants, Grant{Role: name, Path: g.Path, Deny: true})
		}
	}
	return p.Print(st, func(w io.Writer) error {
		var b strings.Builder
		fmt.Fprintf(&b, "Logged in to %s as %s in trust domain %s.\n", st.Auth, st.User, st.TrustDomain)
		if st.Replica != st.Auth {
			fmt.Fprintf(&b, "Replica: %s answered\n", st.Replica)
		}
		fmt.Fprintf(&b, "Roles:   %s\n", strings.Join(st.Roles, ", "))
		fmt.Fprintf(&b, "Expires: %s (in %s)\n", p.Time(st.Expires), st.Expires.Sub(opts.Now()).Round(time.Minute))
		fmt.Fprintf(&b, "Key:     in the %s\n", map[string]string{loginstore.KeyInKeyring: "OS keyring", loginstore.KeyInFile: "key file (no keyring)"}[st.KeyStore])
		if len(st.Grants) == 0 {
			b.WriteString("You may issue no SPIFFE IDs.\n")
		} else {
			b.WriteString("SPIFFE IDs you may issue:\n")
		}
		for _, g := range st.Grants {
			if g.Deny {
				fmt.Fprintf(&b, "  except %s (role %s)\n", g.Path, g.Role)
				continue
			}
			line := "  " + g.Path
			if len(g.DNSSANs) > 0 {
				line += "  DNS SANs " + strings.Join(g.DNSSANs, ", ")
			}
			if len(g.IPSANs) > 0 {
				line += "  IP SANs " + strings.Join(g.IPSANs, ", ")
			}
			if g.MaxSVIDTTL != "" {
				line += "  TTL up to " + g.MaxSVIDTTL
			}
			fmt.Fprintf(&b, "%s  (role %s)\n", line, g.Role)
		}
		_, err := io.WriteString(w, b.String())
		return err
	})
}

// LogoutOptions are the settings of `widctl logout`.
type LogoutOptions struct {
	IO     *iostreams.IOStreams
	Logins *loginstore.LoginStore
}

// NewCmdLogout builds `widctl logout`.
func NewCmdLogout(f *cmdutil.Factory, runF func(*LogoutOptions) error) *cobra.Command {
	opts := &LogoutOptions{IO: f.IOStreams, Logins: f.Logins}
	return &cobra.Command{
		Use:   "logout",
		Short: "Remove your login's key and certificate",
		Long: `Remove the key (from the OS keyring and from the key file, wherever it is),
the certificate and the profile that widctl login saved.`,
		Example: `  widctl logout`,
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return logoutRun(opts)
		},
	}
}

func logoutRun(opts *LogoutOptions) error {
	prof, err := opts.Logins.Profile()
	if errors.Is(err, loginstore.ErrNoLogin) {
		_, err := fmt.Fprintln(opts.IO.Out, "You were not logged in.")
		return err
	}
	if err != nil {
		return cmdutil.InputErrorf("%v (remove %s by hand)", err, opts.Logins.Dir)
	}
	removed, err := opts.Logins.Remove(prof)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(opts.IO.Out, "Logged out %s from %s: removed %s.\n", prof.User, prof.Auth, strings.Join(removed, ", "))
	return err
}
