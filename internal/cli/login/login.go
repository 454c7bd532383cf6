// Package login holds `widctl login`, `widctl logout` and `widctl status`:
// a person's short-lived user certificate from the auth service, its key kept
// in the OS keyring (or a 0600 file, with a warning), and a profile that holds
// no secret.
package login

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	corelogin "github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/loginstore"
	"github.com/wid-project/wid/internal/core/resource"
	"golang.org/x/term"
)

// Options are the settings of `widctl login`.
type Options struct {
	IO      *iostreams.IOStreams
	Config  func() (*cmdutil.Config, error)
	Printer func() (*output.Printer, error)
	Logins  *loginstore.LoginStore
	// ReadPassword reads a password from the terminal without echo; nil
	// means there is no terminal.
	ReadPassword func(prompt string) (string, error)

	User          string
	Invite        string
	PasswordStdin bool
	TTL           resource.Duration
	TOTPCode      string

	// stdin is read once: the password, then maybe the TOTP code.
	stdin *bufio.Reader
}

// NewCmdLogin builds `widctl login`.
func NewCmdLogin(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, Config: f.Config, Printer: f.Printer, Logins: f.Logins, ReadPassword: terminalPassword(f.IOStreams)}
	cmd := &cobra.Command{
		Use:   "login --auth HOST:PORT --user NAME [--invite CODE] [--ca-pin sha256:...] [--password-stdin] [--ttl DURATION]",
		Short: "Log in to an auth service as a user",
		Long: `Log in to a remote auth service and get a short-lived user certificate.

The first login uses the invite that widctl user create printed, and sets your
password. The auth service is checked against --ca-pin; the pin is saved, and
a different CA later is refused. The key is made here and kept in the OS
keyring (service wid), or in a 0600 file under ~/.config/widctl/keys when
there is no keyring. Afterwards widctl commands reach the auth service with
this login until it expires.

The password is read from the terminal without echo, or from stdin with
--password-stdin. Five wrong passwords lock the user for 15 minutes.`,
		Example: `  widctl login --auth auth.example.org:3025 --user alice --invite 3f9c... --ca-pin sha256:ab12...
  widctl login --auth auth.example.org:3025 --user alice
  pass show wid | widctl login --auth auth.example.org:3025 --user alice --password-stdin --ttl 2h`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.User == "" {
				return cmdutil.InputErrorf("--user is required: pass --user NAME")
			}
			if err := resource.ValidateName(opts.User); err != nil {
				return cmdutil.InputErrorf("--user: %v", err)
			}
			if opts.TTL < 0 {
				return cmdutil.InputErrorf("--ttl must be positive")
			}
			if runF != nil {
				return runF(opts)
			}
			return loginRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.User, "user", "", "log in as the user `NAME`")
	cmd.Flags().StringVar(&opts.Invite, "invite", "", "the one-time invite `CODE` from widctl user create, for the first login")
	cmd.Flags().BoolVar(&opts.PasswordStdin, "password-stdin", false, "read the password from the first line of stdin")
	cmd.Flags().StringVar(&opts.TOTPCode, "totp-code", "", "the `CODE` of your authenticator app, for a user with a second factor (asked for at a terminal; with --password-stdin, the second line)")
	cmdutil.DurationVar(cmd.Flags(), &opts.TTL, "ttl", "ask for a login that lasts `DURATION` (default 8h, capped by your roles' max_session_ttl)")
	return cmd
}

func terminalPassword(ios *iostreams.IOStreams) func(string) (string, error) {
	f, ok := ios.In.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(prompt string) (string, error) {
		fmt.Fprint(ios.ErrOut, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(ios.ErrOut)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(b), nil
	}
}

func (opts *Options) password() (string, error) {
	if opts.PasswordStdin {
		opts.stdin = bufio.NewReader(opts.IO.In)
		line, err := opts.stdin.ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", cmdutil.InputErrorf("reading the password from stdin: %v", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", cmdutil.InputErrorf("stdin held no password: pipe it in, one line")
		}
		return pw, nil
	}
	if opts.ReadPassword == nil {
		return "", cmdutil.InputErrorf("there is no terminal to read the password from: pass --password-stdin and pipe it in")
	}
	if opts.Invite == "" {
		return opts.ReadPassword("Password for " + opts.User + ": ")
	}
	pw, err := opts.ReadPassword(fmt.Sprintf("New password for %s (at least %d characters): ", opts.User, corelogin.MinPasswordLength))
	if err != nil {
		return "", err
	}
	// Checked before asking again: typing a refused password twice helps nobody.
	if err := corelogin.CheckPasswordPolicy(opts.User, pw); err != nil {
		return "", cmdutil.InputErrorf("%v: run widctl login again", err)
	}
	again, err := opts.ReadPassword("Again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", cmdutil.InputErrorf("the two passwords differ: run widctl login again")
	}
	return pw, nil
}

// totpCode is the flag's code, else the second line of stdin, else asked for
// at the terminal when the saved login says the user has a second factor.
func (opts *Options) totpCode(known bool) (string, error) {
	if opts.TOTPCode != "" {
		return strings.TrimSpace(opts.TOTPCode), nil
	}
	if opts.stdin != nil {
		line, _ := opts.stdin.ReadString('\n')
		return strings.TrimSpace(line), nil
	}
	if known && opts.ReadPassword != nil && opts.Invite == "" {
		code, err := opts.ReadPassword("TOTP code: ")
		return strings.TrimSpace(code), err
	}
	return "", nil
}

// Result is what `widctl login` prints; its JSON and YAML names are stable.
type Result struct {
	User        string    `json:"user" yaml:"user"`
	Auth        string    `json:"auth" yaml:"auth"`
	TrustDomain string    `json:"trust_domain" yaml:"trust_domain"`
	Roles       []string  `json:"roles" yaml:"roles"`
	Expires     time.Time `json:"expires" yaml:"expires"`
	KeyStore    string    `json:"key_store" yaml:"key_store"`
	KeyFile     string    `json:"key_file,omitempty" yaml:"key_file,omitempty"`
	// TOTPURI is the second factor's secret, shown once at the first login.
	TOTPURI string `json:"totp_uri,omitempty" yaml:"totp_uri,omitempty"`
}

func loginRun(ctx context.Context, opts *Options) error {
	cfg, err := opts.Config()
	if err != nil {
		return err
	}
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	saved, err := opts.Logins.Profile()
	if err != nil && !errors.Is(err, loginstore.ErrNoLogin) {
		return cmdutil.InputError(err)
	}
	auth := cfg.Auth
	if auth == "" && saved != nil {
		auth = saved.Auth
	}
	if auth == "" {
		return cmdutil.InputErrorf("no auth service to log in to: pass --auth HOST:PORT")
	}
	pin := cfg.CAPin
	if saved != nil && saved.Auth == auth {
		if pin != "" && pin != saved.CAPin {
			return &cmdutil.Error{Code: cmdutil.ExitAuth, Message: fmt.Sprintf(
				"the CA pin %s differs from %s, saved at your first login to %s: if its CA was rotated, run widctl logout and log in with the new pin; if not, someone may be impersonating the auth service", pin, saved.CAPin, auth)}
		}
		pin = saved.CAPin
	}
	if pin == "" {
		return cmdutil.InputErrorf("the auth service at %s is not known yet: pass --ca-pin sha256:... as printed by widagent start or widctl user create", auth)
	}
	pw, err := opts.password()
	if err != nil {
		return err
	}
	code, err := opts.totpCode(saved != nil && saved.Auth == auth && saved.User == opts.User && saved.TOTP)
	if err != nil {
		return err
	}
	key, err := client.NewKey()
	if err != nil {
		return fmt.Errorf("generating a key: %w", err)
	}
	csr, err := client.NewCSR(key)
	if err != nil {
		return fmt.Errorf("making a CSR: %w", err)
	}
	c, err := client.Dial(client.Config{Auth: auth, CAPin: pin})
	if err != nil {
		return cmdutil.InputError(err)
	}
	defer c.Close()
	resp, err := c.Login(ctx, &authv1.LoginRequest{User: opts.User, Password: pw, Invite: opts.Invite, Csr: csr, TtlSeconds: int64(opts.TTL.D() / time.Second), TotpCode: code})
	if err != nil {
		return err
	}
	id, err := client.NewIdentity(key, resp.CertChain, resp.HostCa)
	if err != nil {
		return err
	}
	if saved != nil && (saved.Auth != auth || saved.User != opts.User) {
		// One login at a time: the previous one's key must not linger.
		if _, err := opts.Logins.Remove(saved); err != nil {
			return err
		}
	}
	prof := &loginstore.Profile{Auth: auth, User: opts.User, CAPin: pin, TrustDomain: resp.TrustDomain, Roles: resp.Roles, TOTP: resp.TotpUri != "" || code != ""}
	if err := opts.Logins.Save(prof, id); err != nil {
		return err
	}
	res := &Result{User: opts.User, Auth: auth, TrustDomain: resp.TrustDomain, Roles: resp.Roles, Expires: prof.Expires, KeyStore: prof.KeyStore, TOTPURI: resp.TotpUri}
	// The auth service caps --ttl without refusing; say so, or the user
	// plans on a login that ends hours early.
	if asked, got := opts.TTL.D(), time.Until(prof.Expires).Round(time.Minute); asked > 0 && asked-got > time.Minute {
		fmt.Fprintf(opts.IO.ErrOut, "note: you asked for --ttl %s, but your roles allow at most %s; the login lasts %s\n",
			resource.FormatDuration(asked), resource.FormatDuration(got), resource.FormatDuration(got))
	}
	if prof.KeyStore == loginstore.KeyInFile {
		res.KeyFile = opts.Logins.KeyFile(auth, opts.User)
		fmt.Fprintf(opts.IO.ErrOut, "warning: no OS keyring available (%v), so the key is in %s (0600); to use a keyring, run a Secret Service such as gnome-keyring (apt install gnome-keyring) and log in again\n", prof.KeyringProblem, res.KeyFile)
	}
	return p.Print(res, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "Logged in to %s as %s (roles %s) in trust domain %s, until %s.\n",
			res.Auth, res.User, strings.Join(res.Roles, ", "), res.TrustDomain, p.Time(res.Expires)); err != nil {
			return err
		}
		if res.TOTPURI != "" {
			if _, err := fmt.Fprintf(w, "\nAdd this second factor to your authenticator app now; every later login asks for its code.\nIt is shown only this once:\n  %s\n", res.TOTPURI); err != nil {
				return err
			}
			// The QR code only for a person at a terminal: scripts get the URI.
			if p.TTY {
				if code, err := qrText(res.TOTPURI); err == nil {
					_, err = fmt.Fprintf(w, "\n%s", code)
					return err
				}
			}
		}
		return nil
	})
}
