package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/paths"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NewCmdAPI builds the `widagent api` group.
func NewCmdAPI(f *cmdutil.Factory) *cobra.Command {
	api := cmdutil.Group(&cobra.Command{
		Use:   "api <command>",
		Short: "Talk to the SPIFFE Workload API as a workload would",
		Long: `Talk to a Workload API socket (widagent's, or any SPIFFE agent's) with
go-spiffe's client, as a workload would: the agent attests this process and
answers with what it is entitled to.`,
		Example: "  widagent api fetch x509\n  widagent api fetch jwt --audience https://api.example.com",
	})
	api.PersistentFlags().AddFlagSet(f.GlobalFlags)
	_ = api.RegisterFlagCompletionFunc(cmdutil.KeyFormat, cobra.FixedCompletions([]string{string(output.Text), string(output.JSON), string(output.YAML)}, cobra.ShellCompDirectiveNoFileComp))
	fetch := cmdutil.Group(&cobra.Command{
		Use:     "fetch <command>",
		Short:   "Fetch SVIDs from the Workload API",
		Example: "  widagent api fetch x509 --write ./svid\n  widagent api fetch jwt --audience web",
	})
	fetch.AddCommand(NewCmdFetchX509(f, nil), NewCmdFetchJWT(f, nil))
	api.AddCommand(fetch)
	return api
}

// APIOptions are the settings every api command shares.
type APIOptions struct {
	IO      *iostreams.IOStreams
	Printer func() (*output.Printer, error)

	// Socket is the Workload API's address; empty means
	// $SPIFFE_ENDPOINT_SOCKET, else the default socket.
	Socket  string
	Timeout time.Duration
}

func newAPIOptions(f *cmdutil.Factory) APIOptions {
	return APIOptions{IO: f.IOStreams, Printer: f.Printer}
}

func (o *APIOptions) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&o.Socket, "socket", "", "Workload API socket (default $SPIFFE_ENDPOINT_SOCKET, else "+paths.DefaultWorkloadSocket()+")")
	fl.DurationVar(&o.Timeout, "timeout", 10*time.Second, "how long to wait for an answer")
}

func (o *APIOptions) check() error {
	if o.Timeout <= 0 {
		return cmdutil.InputErrorf("--timeout %s must be positive", o.Timeout)
	}
	return nil
}

// runAPI is how every api command runs: it checks the options (the shared
// ones, then check), hands them to runF when a test set one, and otherwise
// calls run with the printer, a context bounded by --timeout and the
// socket's address.
func runAPI[T any](ctx context.Context, opts *T, api *APIOptions, check func() error, runF func(*T) error,
	run func(ctx context.Context, p *output.Printer, addr string, opts *T) error) error {
	if err := api.check(); err != nil {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	if runF != nil {
		return runF(opts)
	}
	p, err := api.Printer()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, api.Timeout)
	defer cancel()
	return run(ctx, p, api.Addr(), opts)
}

// Addr is the Workload API's address as go-spiffe takes it.
func (o *APIOptions) Addr() string {
	s := o.Socket
	if s == "" {
		s = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	}
	if s == "" {
		s = paths.DefaultWorkloadSocket()
	}
	if !strings.Contains(s, "://") {
		s = "unix://" + s
	}
	return s
}

// apiError turns a Workload API failure into one sentence.
func apiError(addr string, err error) error {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return fmt.Errorf("no Workload API socket at %s: start widagent, or point --socket or SPIFFE_ENDPOINT_SOCKET at its socket", path)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer from the Workload API at %s: is widagent running there?", addr)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("asking the Workload API at %s: %w", addr, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("the Workload API at %s is unavailable: %s", addr, st.Message())
	case codes.PermissionDenied:
		return fmt.Errorf("the agent at %s gave this process no identity: %s", addr, st.Message())
	}
	return fmt.Errorf("the Workload API at %s refused: %s", addr, st.Message())
}
