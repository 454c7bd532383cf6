package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/issuer"
	"github.com/wid-project/wid/internal/core/peercred"
	"github.com/wid-project/wid/internal/core/rbac"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Identity kinds.
const (
	KindAdmin = "admin"
	KindUser  = "user"
	KindBot   = "bot"
)

type listenerKind int

const (
	listenerAdmin listenerKind = iota
	listenerTLS
)

// caller is who is making an RPC, resolved once per call.
type caller struct {
	Kind  string
	Name  string
	Roles []*resource.Role
	// RemoteAddr is the TCP peer, or "uid:N" on the admin socket.
	RemoteAddr string
	// CertNotAfter is when the caller's certificate expires (users and bots).
	CertNotAfter time.Time
	// Generation is the user's or bot's generation its certificate carries,
	// checked against the stored one; renewals carry it on.
	Generation string
	// Host is, for a bot, the host its certificate was issued for (see
	// issuer.HostFromCert), or for a certificate from before hosts were
	// written into them, the host its open WatchAgent stream on this
	// replica named; "" when neither is known.
	Host string
	// Serial is the caller's certificate serial.
	Serial string
}

// Actor is the caller's name in audit events: "admin@host", "alice" for a
// user, "bot:NAME" for a bot.
func (c *caller) Actor(s *Server) string {
	switch c.Kind {
	case KindAdmin:
		return s.adminActor()
	case KindBot:
		return "bot:" + c.Name
	case KindUser:
		return c.Name
	}
	return "anonymous"
}

func (c *caller) roleNames() []string {
	out := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		out[i] = r.Metadata.Name
	}
	return out
}

type callerKey struct{}

func callerFrom(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	if c == nil {
		return &caller{}
	}
	return c
}

// Methods callable without a client certificate on the TLS listener.
var anonymousMethods = map[string]bool{
	"/wid.auth.v1.AuthService/Join":          true,
	"/wid.auth.v1.AuthService/JoinChallenge": true,
	"/wid.auth.v1.AuthService/Login":         true,
	"/wid.auth.v1.AuthService/Ping":          true,
}

func (s *Server) unaryAuth(kind listenerKind) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, err := s.authenticate(ctx, kind, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(context.WithValue(ctx, callerKey{}, c), req)
	}
}

func (s *Server) streamAuth(kind listenerKind) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, err := s.authenticate(ss.Context(), kind, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, c)})
	}
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (cs *callerStream) Context() context.Context { return cs.ctx }

func (s *Server) authenticate(ctx context.Context, kind listenerKind, method string) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer information on the connection")
	}
	if kind == listenerAdmin {
		cred, ok := p.AuthInfo.(peercred.Info)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "the admin socket could not read the caller's credentials")
		}
		remote := "uid:" + strconv.FormatUint(uint64(cred.UID), 10)
		if cred.UID != 0 && int(cred.UID) != os.Geteuid() {
			msg := fmt.Sprintf("uid %d may not use the admin socket: only root and the uid running widagent (%d) may", cred.UID, os.Geteuid())
			s.recordDenial(ctx, audit.Event{Type: audit.TypeAccessDenied, Actor: remote, RemoteAddr: remote, Reason: msg, Details: map[string]string{"method": method}})
			return nil, refusal(codes.PermissionDenied, msg, authv1.NextLoginInstead)
		}
		editor, err := s.res.role(ctx, rbac.RoleEditor)
		if err != nil {
			return nil, lookupError("loading the editor role", err)
		}
		return &caller{Kind: KindAdmin, Name: "admin", Roles: []*resource.Role{editor}, RemoteAddr: remote}, nil
	}

	remote := p.Addr.String()
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		if anonymousMethods[method] {
			return &caller{RemoteAddr: remote}, nil
		}
		return nil, refusal(codes.Unauthenticated, "this call needs a login", authv1.NextLogin)
	}
	leaf := tlsInfo.State.PeerCertificates[0]
	idKind, name, err := issuer.IdentityFromCert(leaf)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "your certificate is not a wid identity: log in again")
	}
	// The TLS handshake verified the chain against every wid client CA;
	// each kind must chain to its own. Comparing the verified root by bytes
	// needs no second signature check on every call.
	caType := ca.TypeUser
	if idKind == KindBot {
		caType = ca.TypeHost
	}
	if !chainsTo(tlsInfo.State.VerifiedChains, s.cas.Authorities(caType)) {
		return nil, status.Error(codes.Unauthenticated, "your certificate was not issued by this trust domain for a "+idKind+": log in or join again")
	}
	// A revoked login or bot certificate is refused before anything else,
	// saying when and why it was revoked.
	if idKind == KindUser || idKind == KindBot {
		r, err := s.revokedCert(ctx, serialHex(leaf.SerialNumber.Bytes()))
		if err != nil {
			return nil, storeError("the revocations", err)
		}
		if r != nil {
			return nil, s.revokedCertError(ctx, r, idKind, name, remote, method)
		}
	}
	var roleNames []string
	switch idKind {
	case KindBot:
		bot, err := s.res.bot(ctx, name)
		if err != nil {
			return nil, status.Errorf(codes.Unauthenticated, "bot %q no longer exists: create it again and join with a new token", name)
		}
		roleNames = bot.Spec.Roles
	case KindUser:
		u, err := s.res.user(ctx, name)
		if err != nil {
			return nil, status.Errorf(codes.Unauthenticated, "user %q no longer exists: ask an admin", name)
		}
		roleNames = u.Spec.Roles
	default:
		return nil, status.Error(codes.Unauthenticated, "your certificate is not a user or bot identity: log in again")
	}
	gen, err := s.res.generation(ctx, idKind, name)
	if err != nil {
		return nil, lookupError(fmt.Sprintf("loading the generation of %s %q", idKind, name), err)
	}
	if held := issuer.GenerationFromCert(leaf); held != gen {
		// The certificate was issued to an earlier incarnation of this
		// name: before a reset, or before a removal and re-creation.
		msg, next := fmt.Sprintf("your certificate was issued before user %q was reset or re-created", name), authv1.NextLoginAgain
		if idKind == KindBot {
			msg, next = fmt.Sprintf("this certificate was issued before bot %q was re-created", name), authv1.NextRejoin
		}
		actor := name
		if idKind == KindBot {
			actor = "bot:" + name
		}
		s.recordDenial(ctx, audit.Event{
			Type: audit.TypeAccessDenied, Actor: actor, RemoteAddr: remote, Reason: "certificate of an earlier generation of " + idKind + " " + name,
			Serial: serialHex(leaf.SerialNumber.Bytes()), Details: map[string]string{"method": method, "check": "generation"},
		})
		return nil, refusal(codes.Unauthenticated, msg, next, authv1.ErrorMetaName, name)
	}
	roles, err := s.res.roles(ctx, roleNames)
	if err != nil {
		return nil, lookupError(fmt.Sprintf("loading roles of %s %q", idKind, name), err)
	}
	c := &caller{Kind: idKind, Name: name, Roles: roles, RemoteAddr: remote, CertNotAfter: leaf.NotAfter, Generation: gen, Serial: serialHex(leaf.SerialNumber.Bytes())}
	if idKind == KindBot {
		c.Host = issuer.HostFromCert(leaf)
		if c.Host == "" {
			c.Host = s.legacyHostOf(c.Serial)
		}
	}
	if err := s.refuseLocked(ctx, c, method); err != nil {
		return nil, err
	}
	return c, nil
}

// chainsTo reports whether a verified chain ends at one of roots.
func chainsTo(chains [][]*x509.Certificate, roots []*x509.Certificate) bool {
	for _, chain := range chains {
		if len(chain) == 0 {
			continue
		}
		top := chain[len(chain)-1]
		for _, r := range roots {
			if bytes.Equal(top.Raw, r.Raw) {
				return true
			}
		}
	}
	return false
}

// authorize checks an admin rule and audits a denial.
func (s *Server) authorize(ctx context.Context, kind, verb string) error {
	c := callerFrom(ctx)
	if c.Kind == "" {
		return refusal(codes.Unauthenticated, "this call needs a login", authv1.NextLogin)
	}
	d := rbac.CheckRule(c.Roles, kind, verb)
	if d.Allowed {
		return nil
	}
	s.recordDenial(ctx, audit.Event{
		Type: audit.TypeAccessDenied, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr,
		Reason: d.Reason, Resource: kind, Details: map[string]string{"verb": verb, "check": d.Check},
	})
	return status.Error(codes.PermissionDenied, d.Reason)
}

// recordDenial writes a denial event; failing to audit a denial is logged
// but does not turn the denial into a different error. A source sending
// refusals faster than denialRate has the rest counted, not written (see
// denialLimiter).
func (s *Server) recordDenial(ctx context.Context, ev audit.Event) {
	if !s.denials.allow(ev.RemoteAddr) {
		return
	}
	ev.Outcome = audit.OutcomeDenied
	if ev.Host == "" {
		ev.Host = s.host
	}
	if _, err := s.audit.Emit(context.WithoutCancel(ctx), ev); err != nil {
		s.log.Error("recording a denial in the audit log", "type", ev.Type, "actor", ev.Actor, "error", err)
	}
}

// tlsConfig serves TLS 1.3 with a host-CA certificate and accepts client
// certificates from the user and host CAs (checked per kind after the handshake).
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := s.currentServerCert()
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			for _, t := range []ca.Type{ca.TypeUser, ca.TypeHost} {
				for _, c := range s.cas.Authorities(t) {
					pool.AddCert(c)
				}
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}

const serverCertTTL = 24 * time.Hour

// serverNames are the names and addresses the auth service's certificate
// is valid for: loopback, the host's name, the address it listens on (each
// of the host's addresses when it listens on all of them) and
// Config.ServerNames. A client that dials any replica by the address the
// replica listens on, or by a name an operator gave it, can check the
// certificate against what it dialled.
func (s *Server) serverNames() (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	addIP := func(ip net.IP) {
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	addName := func(n string) {
		if n = strings.TrimSuffix(strings.ToLower(n), "."); n != "" && !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	if s.host != "" {
		addName(s.host)
	}
	host := ""
	if s.tlsLis != nil {
		host, _, _ = net.SplitHostPort(s.tlsLis.Addr().String())
	}
	if h, _, err := net.SplitHostPort(s.cfg.ListenAddr); err == nil && net.ParseIP(h) == nil && h != "" {
		// --auth-listen named a host: clients dial that name.
		addName(h)
	}
	switch ip := net.ParseIP(host); {
	case ip == nil:
	case ip.IsUnspecified():
		// Listening on every address: clients may dial any of them.
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
					addIP(n.IP)
				}
			}
		}
	default:
		addIP(ip)
	}
	for _, n := range s.cfg.ServerNames {
		if ip := net.ParseIP(n); ip != nil {
			addIP(ip)
		} else {
			addName(n)
		}
	}
	return dns, ips
}

// currentServerCert returns the auth service's certificate, re-issuing it
// past half its life so that a long-running service never serves an expired one.
func (s *Server) currentServerCert() (*tls.Certificate, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	now := s.clock()
	// A host CA rotation that changed the signing key re-issues at once.
	if c := s.serverCert; c != nil && now.Before(c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)/2)) &&
		hex.EncodeToString(c.Leaf.AuthorityKeyId) == s.cas.ActiveSignerID(ca.TypeHost) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the server key: %w", err)
	}
	dns, ips := s.serverNames()
	leaf, err := s.issuer.SignInternalCert(issuer.InternalParams{
		CA: ca.TypeHost, PublicKey: key.Public(), TTL: serverCertTTL, Kind: "server", Name: "auth", DNSNames: dns, IPs: ips,
	})
	if err != nil {
		return nil, fmt.Errorf("issuing the server certificate: %w", err)
	}
	chain := [][]byte{leaf.Raw}
	if hs, err := s.cas.Signer(ca.TypeHost); err == nil && hs.Cert != nil {
		// The CA travels in the chain so that a client holding only the pin can check it.
		chain = append(chain, hs.Cert.Raw)
	}
	s.serverCert = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	return s.serverCert, nil
}
