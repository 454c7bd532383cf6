// Command widagent runs the wid auth service and agent. It only wires: the
// command tree, the streams and the exit codes live in internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/wid-project/wid/internal/cli/agentcmd"
	"github.com/wid-project/wid/internal/cli/iostreams"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := agentcmd.Run(ctx, agentcmd.NewFactory(iostreams.System()), os.Args[1:])
	stop()
	os.Exit(code)
}
