package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readyTimeout bounds the store check of one /readyz: a database that
// takes longer to answer a one-row read is not ready to serve.
const readyTimeout = 2 * time.Second

// Ready is nil when the auth service can serve: its store answers a read.
// A replica whose database is unreachable is not ready, so that a load
// balancer sends its clients to another; it turns ready again by itself
// when the database is back.
func (s *Server) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := s.db.GetMeta(ctx, metaTrustDomain); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the store did not answer within %s", readyTimeout)
		}
		return fmt.Errorf("the store cannot be read: %w", err)
	}
	return nil
}

// ServeDiag serves /healthz, /readyz and /metrics on lis until ctx ends:
// the diagnostics of an auth service that runs without an agent.
func (s *Server) ServeDiag(ctx context.Context, lis net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ready := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wid_auth_store_ready",
		Help: "1 when the last /readyz found the store answering, 0 when not.",
	})
	reg.MustRegister(ready)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(r.Context()); err != nil {
			ready.Set(0)
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		ready.Set(1)
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/crl/", s.CRLHandler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving diagnostics: %w", err)
	}
	return nil
}
