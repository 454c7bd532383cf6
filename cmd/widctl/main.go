// Command widctl administers a wid trust domain. It only wires: the command
// tree, the streams and the exit codes live in internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/root"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := root.Run(ctx, cmdutil.NewFactory(iostreams.System()), os.Args[1:])
	stop()
	os.Exit(code)
}
