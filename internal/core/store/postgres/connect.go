package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// parseURL checks that url is a postgres:// URL and parses it for the pool.
// Only the URL form is taken: it is what --store documents, and its
// password can be found, and kept out of messages, with certainty.
func parseURL(url string) (*pgxpool.Config, error) {
	u, err := neturl.Parse(url)
	if err != nil {
		// url.Error repeats the whole URL, password included: only its
		// cause is shown.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("the PostgreSQL store URL is invalid: %s", redact(err.Error(), url))
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, fmt.Errorf("the PostgreSQL store URL must start with postgres://, not %q", u.Scheme+":")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		host := u.Host
		if host == "" {
			host = "the default host"
		}
		var pe *pgconn.ParseConfigError
		msg := err.Error()
		if errors.As(err, &pe) && pe.Unwrap() != nil {
			msg = pe.Unwrap().Error()
		}
		return nil, fmt.Errorf("the PostgreSQL store URL for %s is invalid: %s", host, redact(msg, url))
	}
	return cfg, nil
}

// describeServer names the first server the config dials: host:port, or the
// unix socket directory.
func describeServer(c *pgconn.Config) string {
	if strings.HasPrefix(c.Host, "/") {
		return fmt.Sprintf("unix socket %s/.s.PGSQL.%d", c.Host, c.Port)
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
}

// connectError turns a failure to reach or log into the server into one
// sentence that names the server and what failed. Server messages and
// network errors carry no password, but the result is still scrubbed of
// the URL's password in case a part of the URL is echoed.
func connectError(where string, c *pgconn.Config, url string, err error) error {
	return fmt.Errorf("cannot use the PostgreSQL store at %s: %s", where, redact(connectReason(c, err), url))
}

func connectReason(c *pgconn.Config, err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case codeInvalidPassword:
			return fmt.Sprintf("the server refused the password of user %q", c.User)
		case codeInvalidAuthorization:
			return fmt.Sprintf("the server refused user %q (%s)", c.User, pe.Message)
		case codeInvalidCatalogName:
			return fmt.Sprintf("database %q does not exist there", c.Database)
		case codeCannotConnectNow:
			return "the server is starting up or shutting down; try again shortly"
		case codeTooManyConnections:
			return "the server has no connection slots left"
		}
		return fmt.Sprintf("the server answered %s (SQLSTATE %s)", pe.Message, pe.Code)
	}
	if errors.Is(err, context.Canceled) {
		return "the start was canceled while connecting"
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Sprintf("the server did not answer within %s", c.ConnectTimeout)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		if dnsErr.IsNotFound {
			return fmt.Sprintf("the host name %s does not resolve", dnsErr.Name)
		}
		return fmt.Sprintf("resolving the host name %s failed: %s", dnsErr.Name, dnsErr.Err)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return "the connection was refused (is PostgreSQL running and listening there?)"
	}
	if errors.Is(err, syscall.ENOENT) {
		return "there is no socket there (is PostgreSQL running?)"
	}
	if errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return "the host is unreachable"
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return fmt.Sprintf("the server's TLS certificate was not accepted (%s)", innermost(err))
	}
	return innermost(err)
}

// innermost is the text of the deepest error in err's first chain: the
// cause, without pgx's prefix that lists the user and database.
func innermost(err error) string {
	for {
		var next error
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			if errs := e.Unwrap(); len(errs) > 0 {
				next = errs[0]
			}
		case interface{ Unwrap() error }:
			next = e.Unwrap()
		}
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// redact removes url's passwords (in the userinfo or a password parameter)
// from msg, whatever produced msg.
func redact(msg, url string) string {
	for _, pw := range urlPasswords(url) {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		if esc := neturl.QueryEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, "xxxxx")
		}
		if esc := neturl.PathEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, "xxxxx")
		}
	}
	return msg
}

// urlPasswords finds the passwords of a URL, even one that does not parse.
func urlPasswords(url string) []string {
	var pws []string
	if u, err := neturl.Parse(url); err == nil {
		if u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				pws = append(pws, pw)
			}
		}
		if pw := u.Query().Get("password"); pw != "" {
			pws = append(pws, pw)
		}
		return pws
	}
	rest, ok := strings.CutPrefix(url, "postgres://")
	if !ok {
		rest, ok = strings.CutPrefix(url, "postgresql://")
	}
	if !ok {
		return nil
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		if i := strings.Index(rest[:at], ":"); i >= 0 && i+1 < at {
			pws = append(pws, rest[i+1:at])
		}
	}
	if i := strings.Index(rest, "password="); i >= 0 {
		pw := rest[i+len("password="):]
		if j := strings.IndexAny(pw, "&# "); j >= 0 {
			pw = pw[:j]
		}
		if pw != "" {
			pws = append(pws, pw)
		}
	}
	return pws
}

// hasParam reports whether url's query sets key.
func hasParam(url, key string) bool {
	u, err := neturl.Parse(url)
	return err == nil && u.Query().Has(key)
}

// RedactURL returns url with its password replaced, for logs and banners.
func RedactURL(url string) string {
	u, err := neturl.Parse(url)
	if err != nil {
		return redact(url, url)
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = neturl.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	// A password may also be given as a query parameter.
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
