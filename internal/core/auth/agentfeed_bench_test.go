package auth_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/agentsync"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"github.com/wid-project/wid/internal/core/client"
)

// BenchmarkAgentFanout: one workload identity change pushed to 200 agent
// streams of one bot (one connection), which hold 1,000 identities; per
// op, the time until every stream has it.
func BenchmarkAgentFanout(b *testing.B) {
	srv := authtest.Start(b)
	ctx := context.Background()
	admin := srv.AdminClient(b)
	var docs [][]byte
	t := b
	for i := range 1000 {
		docs = append(docs, wiDoc(t, fmt.Sprintf("wi-%04d", i), "prod", fmt.Sprintf("/svc/wi-%04d", i), nil, 0, uidIs("1000")))
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: [][]byte{agentRole(t, "prod-agent", []string{"prod"}, nil, 0, "/svc/**")}}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: docs}); err != nil {
		b.Fatal(err)
	}
	bot, err := admin.CreateBot(ctx, &authv1.CreateBotRequest{Name: "agent", Roles: []string{"prod-agent"}})
	if err != nil {
		b.Fatal(err)
	}
	id, err := join(srv, bot.Token)
	if err != nil {
		b.Fatal(err)
	}
	c, err := client.Dial(client.Config{Auth: srv.Addr, Identity: id})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const streams = 200
	got := make(chan int64, streams*4)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range streams {
		wg.Go(func() {
			s, err := c.WatchAgent(sctx, agentsync.Request(fmt.Sprintf("host-%d", i), agentsync.Position{}))
			if err != nil {
				return
			}
			for {
				m, err := s.Recv()
				if err != nil {
					return
				}
				if !m.Heartbeat && !m.More {
					got <- m.Revision
				}
			}
		})
	}
	for range streams {
		<-got
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := admin.CreateResource(ctx, &authv1.CreateResourceRequest{Force: true,
			Resources: [][]byte{wiDoc(t, "wi-0000", "prod", fmt.Sprintf("/svc/v%d", i), nil, 0, uidIs("1000"))}}); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for range streams {
			select {
			case <-got:
			case <-deadline:
				b.Fatal("a change did not reach every stream within 10s")
			}
		}
	}
}
