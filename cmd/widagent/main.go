// Command widagent runs the wid auth service and agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wid-project/wid/internal/cli/agentcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := agentcmd.NewRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", agentcmd.Message(err))
		var fe agentcmd.FlagError
		if errors.As(err, &fe) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
