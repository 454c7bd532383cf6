// Package cmdutil is what every widctl command shares: the Factory that
// hands out configuration, the auth service client and the streams; the
// mapping of errors to sentences and exit codes; argument and flag helpers.
// Commands get everything through the Factory, so tests replace any part.
package cmdutil

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/loginstore"
)

// Factory hands commands what they need, lazily: a command that fails on
// its flags never reads the config file or dials the auth service.
type Factory struct {
	IOStreams *iostreams.IOStreams
	// Config resolves the configuration once.
	Config func() (*Config, error)
	// Client connects to the auth service named by Config. The caller closes it.
	Client func(ctx context.Context) (*client.Client, error)
	// Logger logs debug details to stderr with --debug, and nothing otherwise.
	Logger func() *slog.Logger
	// GlobalFlags are the flags of every command; the root command adds them
	// as persistent flags and Config reads them.
	GlobalFlags *pflag.FlagSet
	// Logins is where widctl login keeps the user's login; tests swap the keyring.
	Logins *loginstore.LoginStore
}

// NewFactory builds the Factory widctl runs with.
func NewFactory(ios *iostreams.IOStreams) *Factory {
	f := &Factory{IOStreams: ios, GlobalFlags: NewGlobalFlags(), Logins: &loginstore.LoginStore{Dir: ConfigDir(), Keyring: loginstore.OSKeyring}}
	f.Config = sync.OnceValues(func() (*Config, error) { return LoadConfig(f.GlobalFlags) })
	f.Logger = sync.OnceValue(func() *slog.Logger {
		if cfg, err := f.Config(); err == nil && cfg.Debug {
			return slog.New(slog.NewTextHandler(ios.ErrOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		return slog.New(slog.DiscardHandler)
	})
	f.Client = func(ctx context.Context) (*client.Client, error) {
		cfg, err := f.Config()
		if err != nil {
			return nil, err
		}
		return DialWithLogin(ctx, cfg, f.Logins, f.Logger())
	}
	return f
}

// Printer returns a printer on stdout in the configured format.
func (f *Factory) Printer() (*output.Printer, error) {
	cfg, err := f.Config()
	if err != nil {
		return nil, err
	}
	return &output.Printer{Out: f.IOStreams.Out, Format: cfg.Format, TTY: f.IOStreams.IsStdoutTTY()}, nil
}

// DialWithLogin is Dial that, with no admin socket and no --identity, uses
// the login saved by widctl login: its auth address when none is given, its
// certificate when the address is the login's.
func DialWithLogin(ctx context.Context, cfg *Config, logins *loginstore.LoginStore, log *slog.Logger) (*client.Client, error) {
	if cfg.AdminSocket != "" || cfg.Identity != "" || logins == nil {
		return Dial(ctx, cfg, log)
	}
	p, err := logins.Profile()
	if errors.Is(err, loginstore.ErrNoLogin) {
		return Dial(ctx, cfg, log)
	}
	if err != nil {
		return nil, &Error{Code: ExitBadInput, Message: sentence(err), Err: err}
	}
	if cfg.Auth != "" && cfg.Auth != p.Auth {
		return Dial(ctx, cfg, log)
	}
	id, err := LoginIdentity(logins, p, time.Now())
	if err != nil {
		return nil, err
	}
	log.DebugContext(ctx, "connecting to the auth service with the saved login", "auth", p.Auth, "user", p.User, "key_store", p.KeyStore)
	c, _, err := DialLogin(ctx, logins, p, id, log)
	return c, err
}

// DialLogin connects with the saved login id and follows a CA rotation in
// progress (see FollowRotation). It returns the connection and the identity
// it uses, which is a renewed one when the user CA's key changed.
func DialLogin(ctx context.Context, logins *loginstore.LoginStore, p *loginstore.Profile, id *client.Identity, log *slog.Logger) (*client.Client, *client.Identity, error) {
	c, err := client.Dial(client.Config{Auth: p.Auth, CAPin: p.CAPin, Identity: id})
	if err != nil {
		return nil, nil, InputError(err)
	}
	next, err := FollowRotation(ctx, c, logins, p, id)
	if err != nil {
		if refused := LoginRefused(ctx, p, id, err); refused != nil {
			c.Close()
			return nil, nil, refused
		}
		log.DebugContext(ctx, "following a CA rotation failed; the login stays as it is", "error", err)
		return c, id, nil
	}
	if next != id {
		c.Close()
		if c, err = client.Dial(client.Config{Auth: p.Auth, CAPin: p.CAPin, Identity: next}); err != nil {
			return nil, nil, InputError(err)
		}
	}
	return c, next, nil
}

// FollowRotation keeps a saved login working through CA rotations: it
// trusts the host CAs the auth service now names (learned over a
// connection verified with the ones saved) and, when the user CA signs
// with another key, renews the login's certificate for a new key, with the
// same expiry. It returns the identity to use, saved.
func FollowRotation(ctx context.Context, c *client.Client, logins *loginstore.LoginStore, p *loginstore.Profile, id *client.Identity) (*client.Identity, error) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ping, err := c.Ping(pctx, &authv1.PingRequest{})
	if err != nil {
		return id, err
	}
	next := id
	hostCAs := ping.GetHostAuthorities()
	if len(hostCAs) > 0 && !sameDER(id.HostCAs, hostCAs) {
		if next, err = client.NewIdentity(id.Key, id.Chain, hostCAs); err != nil {
			return id, err
		}
	}
	if signer := ping.GetUserSignerId(); signer != "" && hex.EncodeToString(id.Leaf.AuthorityKeyId) != signer {
		key, err := client.NewKey()
		if err != nil {
			return id, err
		}
		csr, err := client.NewCSR(key)
		if err != nil {
			return id, err
		}
		resp, err := c.RenewUserCert(pctx, &authv1.RenewUserCertRequest{Csr: csr})
		if err != nil {
			return id, err
		}
		trusted := make([][]byte, len(next.HostCAs))
		for i, c := range next.HostCAs {
			trusted[i] = c.Raw
		}
		if next, err = client.NewIdentity(key, resp.CertChain, trusted); err != nil {
			return id, err
		}
	}
	if next == id {
		return id, nil
	}
	if ping.GetCaPin() != "" {
		p.CAPin = ping.GetCaPin()
	}
	if err := logins.Save(p, next); err != nil {
		return id, err
	}
	return next, nil
}

// LoginRefused tells a login the auth service no longer accepts from an
// auth service that is down: when a call with the login failed to connect
// (err), it asks again without a certificate, and if the auth service
// answers and its user CA signs with another key than the login's, the
// login went unused through a rotation of the user CA. It returns the
// error to show then, else nil.
func LoginRefused(ctx context.Context, p *loginstore.Profile, id *client.Identity, err error) error {
	if status.Code(err) != codes.Unavailable {
		return nil
	}
	anon, derr := client.Dial(client.Config{Auth: p.Auth, CAPin: p.CAPin})
	if derr != nil {
		return nil
	}
	defer anon.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ping, perr := anon.Ping(pctx, &authv1.PingRequest{})
	if perr != nil || ping.GetUserSignerId() == "" || ping.GetUserSignerId() == hex.EncodeToString(id.Leaf.AuthorityKeyId) {
		return nil
	}
	return &Error{Code: ExitAuth, Message: fmt.Sprintf("the auth service at %s no longer accepts your login as %s: its user CA was rotated while the login went unused; run widctl login", p.Auth, p.User), Err: err}
}

func sameDER(certs []*x509.Certificate, ders [][]byte) bool {
	if len(certs) != len(ders) {
		return false
	}
	for i, c := range certs {
		if !bytes.Equal(c.Raw, ders[i]) {
			return false
		}
	}
	return true
}

// LoginIdentity loads the saved login's identity, refusing an expired one
// with the one sentence that says what to do.
func LoginIdentity(logins *loginstore.LoginStore, p *loginstore.Profile, now time.Time) (*client.Identity, error) {
	id, err := logins.Identity(p)
	if err != nil {
		return nil, &Error{Code: ExitAuth, Message: sentence(err), Err: err}
	}
	if !now.Before(id.Expires()) {
		return nil, &Error{Code: ExitAuth, Message: fmt.Sprintf("your login as %s to %s expired at %s: run widctl login", p.User, p.Auth, id.Expires().UTC().Format(time.RFC3339))}
	}
	return id, nil
}

// Dial connects to the auth service cfg names. Connecting is lazy: an auth
// service that is down shows on the first call, as ExitUnavailable.
func Dial(ctx context.Context, cfg *Config, log *slog.Logger) (*client.Client, error) {
	if cfg.AdminSocket == "" && cfg.Auth == "" {
		return nil, &Error{Code: ExitUnavailable, Message: "no auth service found: run widctl on the machine where widagent runs, set " + EnvVar(KeyAdminSocket) + ", or pass --auth HOST:PORT (and log in with widctl login)"}
	}
	cc := client.Config{AdminSocket: cfg.AdminSocket, Auth: cfg.Auth, CAPin: cfg.CAPin}
	// The admin socket authenticates by peer credentials; an identity only
	// matters over TCP.
	if cfg.Auth != "" && cfg.Identity != "" {
		id, err := client.LoadIdentity(cfg.Identity)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Code: ExitBadInput, Message: "no identity found in " + cfg.Identity + ": check --identity, or join or log in first", Err: err}
		}
		if err != nil {
			return nil, &Error{Code: ExitBadInput, Message: sentence(err), Err: err}
		}
		cc.Identity = id
	}
	log.DebugContext(ctx, "connecting to the auth service", "target", cfg.Target(), "config_file", cfg.File, "identity", cfg.Identity)
	c, err := client.Dial(cc)
	if err != nil {
		return nil, InputError(err)
	}
	return c, nil
}
