package auth

import "github.com/prometheus/client_golang/prometheus"

// serverMetrics are the auth service's Prometheus metrics.
type serverMetrics struct {
	agentStreamsDropped prometheus.Counter
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		agentStreamsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wid_auth_agent_streams_dropped_total",
			Help: "Agent streams ended because the agent took nothing within the send timeout.",
		}),
	}
}

// Collectors are the auth service's metrics, for a registry to serve.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{s.metrics.agentStreamsDropped}
}
