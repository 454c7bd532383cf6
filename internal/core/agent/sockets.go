package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/wid-project/wid/internal/core/rbac"
	"google.golang.org/grpc"
)

// WorkloadAPIConfig is one more Workload API socket beside the agent's own
// (as tbot serves several spiffe-workload-api services): callers there are
// attested the same way, and get the workload identities they match plus
// this socket's own config SVIDs instead of the agent's.
type WorkloadAPIConfig struct {
	Listen string       `yaml:"listen"`
	SVIDs  []ConfigSVID `yaml:"svids"`
}

// socketKey marks a call's context with the index of the socket it came in
// on (0: Config.SocketPath).
type socketKey struct{}

func socketOf(ctx context.Context) int {
	i, _ := ctx.Value(socketKey{}).(int)
	return i
}

type socketStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *socketStream) Context() context.Context { return s.ctx }

// socketInterceptors tag every call with the socket index i.
func socketInterceptors(i int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(context.WithValue(ctx, socketKey{}, i), req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &socketStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), socketKey{}, i)})
		}),
	}
}

// compileSockets checks the extra sockets and compiles their SVIDs.
func compileSockets(main string, extra []WorkloadAPIConfig) ([][]*rbac.Workload, error) {
	seen := map[string]bool{main: true}
	var out [][]*rbac.Workload
	for i, s := range extra {
		if s.Listen == "" {
			return nil, fmt.Errorf("agent config workload API %d: listen is empty: give the socket's path", i+2)
		}
		if seen[s.Listen] {
			return nil, fmt.Errorf("agent config workload API %d: socket %s is already served: give each its own", i+2, s.Listen)
		}
		seen[s.Listen] = true
		w, err := compileConfigSVIDs(s.SVIDs)
		if err != nil {
			return nil, fmt.Errorf("agent config workload API %d (%s): %w", i+2, s.Listen, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// configFor is the config SVIDs of socket i, and a cache key prefix that
// keeps one socket's entitlements from answering another's callers.
func (a *Agent) configFor(i int) ([]*rbac.Workload, string) {
	if i == 0 || i > len(a.extraConfig) {
		return a.config, ""
	}
	return a.extraConfig[i-1], strconv.Itoa(i) + "\x00"
}

// listenExtra listens on the extra sockets; serve serves each until ctx ends.
func (a *Agent) listenExtra() ([]*grpc.Server, []net.Listener, error) {
	var srvs []*grpc.Server
	var liss []net.Listener
	for i, s := range a.cfg.ExtraWorkloadAPIs {
		srv, lis, err := a.listenOn(s.Listen, i+1)
		if err != nil {
			for _, l := range liss {
				_ = l.Close()
			}
			return nil, nil, err
		}
		srvs, liss = append(srvs, srv), append(liss, lis)
	}
	return srvs, liss, nil
}

// serve runs srv on lis until ctx ends, then stops it (gracefully for up
// to 2s) and removes the socket at path.
func serve(ctx context.Context, srv *grpc.Server, lis net.Listener, path string) error {
	defer os.Remove(path)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
		}
		return nil
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serving the Workload API on %s: %w", path, err)
		}
		return nil
	}
}
