package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus series, on a registry of its own so
// that two agents in one process (tests) do not collide.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	cached    *prometheus.GaugeVec
	renewals  *prometheus.CounterVec
	connected prometheus.Gauge
	skipped   prometheus.Gauge
	authRPCs  *prometheus.CounterVec
	sdsNACKs  prometheus.Counter
	dropped   *prometheus.CounterVec
	clockSkew prometheus.Gauge
}

func newMetrics(extra ...prometheus.Collector) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wid_agent_workload_requests_total",
			Help: "Workload API requests, by method and gRPC status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wid_agent_workload_request_duration_seconds",
			Help:    "Time to the first response of a Workload API request, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method"}),
		cached: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wid_agent_cached_svids",
			Help: "SVIDs held in the agent's cache, by type.",
		}, []string{"type"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wid_agent_svid_issuances_total",
			Help: "SVID issuances and renewals the agent asked for, by type and outcome.",
		}, []string{"type", "outcome"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wid_agent_auth_connected",
			Help: "1 while the agent's stream from the auth service is up.",
		}),
		skipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wid_agent_workload_identities_skipped",
			Help: "Workload identities of the last state that the agent cannot serve (stored corrupt, or not decodable here); the agent's log names each.",
		}),
		authRPCs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wid_agent_auth_rpcs_total",
			Help: "Calls the agent made to the auth service, by method.",
		}, []string{"method"}),
		sdsNACKs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wid_agent_sds_nacks_total",
			Help: "SDS responses Envoy rejected (its message is in the agent's log).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wid_agent_streams_dropped_total",
			Help: "Workload API and SDS streams the agent ended because their client read nothing for the stream send timeout, by method.",
		}, []string{"method"}),
		clockSkew: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wid_agent_auth_clock_skew_seconds",
			Help: "How far the auth service's clock is ahead of the agent's (negative: behind), from its last issuance.",
		}),
	}
	m.reg.MustRegister(extra...)
	m.reg.MustRegister(m.requests, m.latency, m.cached, m.renewals, m.connected, m.skipped, m.authRPCs, m.sdsNACKs, m.dropped, m.clockSkew,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range []string{authv1.SVIDTypeX509, authv1.SVIDTypeJWT, authv1.SVIDTypeWIT} {
		m.cached.WithLabelValues(k).Set(0)
	}
	return m
}

func (m *metrics) renewal(kind, outcome string) { m.renewals.WithLabelValues(kind, outcome).Inc() }

func (m *metrics) setCached(n map[string]int) {
	for _, k := range []string{authv1.SVIDTypeX509, authv1.SVIDTypeJWT, authv1.SVIDTypeWIT} {
		m.cached.WithLabelValues(k).Set(float64(n[k]))
	}
}

// diagServer serves /healthz, /readyz and /metrics on addr.
type diagServer struct {
	// lis is bound before the agent joins, so that a taken port is found
	// while the join token is still unspent.
	lis   net.Listener
	ready func() error
	m     *metrics
	// extra are more paths to serve, by pattern.
	extra map[string]http.Handler
	// bound receives the address actually listened on (for ":0").
	bound func(string)
}

func (d *diagServer) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{}))
	for pattern, h := range d.extra {
		mux.Handle(pattern, h)
	}
	lis := d.lis
	if d.bound != nil {
		d.bound(lis.Addr().String())
	}
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
