// Command mtls is a workload for the end-to-end tests: it gets its identity
// from the Workload API at $SPIFFE_ENDPOINT_SOCKET and does one mTLS
// exchange with spiffetls, as a server ("mtls serve") or a client ("mtls
// dial ADDR"), printing the peer's SPIFFE ID. The tests copy it to two
// paths, so that rules on workload.unix.path give each copy its own identity.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mtls:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return fmt.Errorf("getting an X509 source: %w", err)
	}
	defer source.Close()
	me, err := source.GetX509SVID()
	if err != nil {
		return err
	}
	switch {
	case len(args) == 1 && args[0] == "serve":
		lis, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeAny(), source))
		if err != nil {
			return err
		}
		defer lis.Close()
		fmt.Printf("listening %s as %s\n", lis.Addr(), me.ID)
		conn, err := lis.Accept()
		if err != nil {
			return err
		}
		defer conn.Close()
		return exchange(conn, me.ID.String())
	case len(args) == 2 && args[0] == "dial":
		conn, err := spiffetls.DialWithMode(ctx, "tcp", args[1], spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeAny(), source))
		if err != nil {
			return err
		}
		defer conn.Close()
		return exchange(conn, me.ID.String())
	}
	return fmt.Errorf("usage: mtls serve | mtls dial ADDR")
}

// exchange sends our ID, reads the peer's, and prints what TLS said the
// peer is next to what the peer says it is.
func exchange(conn net.Conn, me string) error {
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(conn, me); err != nil {
		return err
	}
	said, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Printf("peer %s says %s", peer, said)
	return nil
}
