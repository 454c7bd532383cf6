package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
)

// hostCAs are the roots a client that checks names verifies the auth
// service's certificate with.
func hostCAs(t *testing.T, srv *authtest.Server) *x509.CertPool {
	t.Helper()
	c, err := client.Dial(client.Config{Auth: srv.Addr, CAPin: srv.CAPin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ping, err := c.Ping(ctx, &authv1.PingRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, der := range ping.GetHostAuthorities() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(cert)
	}
	return pool
}

// handshake dials addr expecting a certificate valid for name, as a TLS
// client that checks names does.
func handshake(addr, name string, roots *x509.CertPool) error {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// TestServerCertificateNamesWhatClientsDial: a replica's certificate is
// valid for the address it listens on, for each of the host's addresses
// when it listens on all of them, and for --server-name; not for others.
func TestServerCertificateNamesWhatClientsDial(t *testing.T) {
	t.Parallel()
	t.Run("its own address", func(t *testing.T) {
		// 127.0.0.2 is a loopback address that is not in every certificate.
		srv := authtest.Start(t, authtest.WithListenAddr("127.0.0.2:0"))
		if err := handshake(srv.Addr, "127.0.0.2", hostCAs(t, srv)); err != nil {
			t.Fatalf("dialling %s: %v", srv.Addr, err)
		}
	})
	t.Run("every address", func(t *testing.T) {
		srv := authtest.Start(t, authtest.WithListenAddr("0.0.0.0:0"))
		_, port, _ := net.SplitHostPort(srv.Addr)
		roots := hostCAs(t, srv)
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			t.Fatal(err)
		}
		tried := 0
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok || n.IP.To4() == nil || n.IP.IsLinkLocalUnicast() {
				continue
			}
			tried++
			if err := handshake(net.JoinHostPort(n.IP.String(), port), n.IP.String(), roots); err != nil {
				t.Errorf("dialling %s: %v", n.IP, err)
			}
		}
		if tried == 0 {
			t.Fatal("the host has no IPv4 address to dial")
		}
	})
	t.Run("server names", func(t *testing.T) {
		srv := authtest.Start(t, authtest.WithServerNames("auth-2.wid.test", "192.0.2.7"))
		roots := hostCAs(t, srv)
		if err := handshake(srv.Addr, "auth-2.wid.test", roots); err != nil {
			t.Fatalf("dialling as auth-2.wid.test: %v", err)
		}
		if err := handshake(srv.Addr, "192.0.2.7", roots); err != nil {
			t.Fatalf("dialling as 192.0.2.7: %v", err)
		}
		var hostErr x509.HostnameError
		if err := handshake(srv.Addr, "elsewhere.wid.test", roots); err == nil || !errors.As(err, &hostErr) {
			t.Fatalf("a name the certificate does not hold: %v, want a host name error", err)
		}
	})
}
