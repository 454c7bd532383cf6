// Command widctl administers a wid trust domain. It only wires: the command
// tree, the streams and the exit code live in internal/cli.
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
	f := cmdutil.NewFactory(iostreams.System())
	err := root.NewRootCmd(f).ExecuteContext(ctx)
	stop()
	os.Exit(cmdutil.HandleError(f, err))
}
