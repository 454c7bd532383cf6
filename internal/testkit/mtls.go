package testkit

import (
	"bufio"
	"context"
	"fmt"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// GreeterMTLS serves mTLS on a free loopback port as svid, trusting bundle
// and admitting only the peers authorize allows, and answers the first
// line a peer sends with "hello <the peer's SPIFFE ID>, you said <line>":
// the peer the server saw is in the answer. It returns the address; the
// listener closes when the test ends.
func GreeterMTLS(t testing.TB, authorize tlsconfig.Authorizer, svid x509svid.Source, bundle x509bundle.Source) string {
	t.Helper()
	l, err := spiffetls.ListenWithMode(context.Background(), "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithRawConfig(authorize, svid, bundle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				peer, _ := spiffetls.PeerIDFromConn(conn)
				fmt.Fprintf(conn, "hello %s, you said %s", peer, line)
			}()
		}
	}()
	return l.Addr().String()
}

// Greet dials addr over mTLS as svid, admitting the server authorize
// allows, says "hi" and returns the answer line.
func Greet(ctx context.Context, addr string, authorize tlsconfig.Authorizer, svid x509svid.Source, bundle x509bundle.Source) (string, error) {
	conn, err := spiffetls.DialWithMode(ctx, "tcp", addr, spiffetls.MTLSClientWithRawConfig(authorize, svid, bundle))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := fmt.Fprintln(conn, "hi"); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}
