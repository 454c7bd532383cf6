package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl lock create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)
	// Now is the clock the TTL counts from.
	Now func() time.Time

	User     string
	Bot      string
	Host     string
	SPIFFEID string
	TTL      resource.Duration
	Reason   string
	// Name is the lock's ID; empty makes a random one.
	Name string
}

// NewCmdCreate builds `widctl lock create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer, Now: time.Now}
	cmd := &cobra.Command{
		Use:   "create --user USER | --bot BOT | --host HOST | --spiffe-id ID --reason TEXT [--ttl DURATION]",
		Short: "Lock one user, bot, host or SPIFFE ID",
		Long: `Lock exactly one target. The reason is shown in every refusal the lock
causes, so say why. Without --ttl the lock holds until it is removed;
--ttl is at most a year.

--spiffe-id takes a SPIFFE ID or its path (/svc/web) and locks that ID and
every ID under its path (/svc/web/1), never /svc/webx. --host locks every bot
whose agent reports that host name.

You cannot lock yourself when you are the last user who may remove locks:
that would lock every admin out.`,
		Example: `  widctl lock create --bot web-agent --reason "host compromised" --ttl 24h
  widctl lock create --user mallory --reason "left the company"
  widctl lock create --host node-7 --reason "disk image leaked"
  widctl lock create --spiffe-id spiffe://example.org/svc/payments --reason "key leaked"`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&opts.User, "user", "", "lock the user `NAME`")
	fs.StringVar(&opts.Bot, "bot", "", "lock the bot `NAME`")
	fs.StringVar(&opts.Host, "host", "", "lock every bot whose agent runs on `HOST`")
	fs.StringVar(&opts.SPIFFEID, "spiffe-id", "", "lock the SPIFFE `ID` (or path) and every ID under it")
	fs.StringVar(&opts.Reason, "reason", "", "say why in `TEXT`, shown in every refusal")
	cmdutil.DurationVar(fs, &opts.TTL, "ttl", "hold the lock for `DURATION` (at most a year; default: until removed)")
	fs.StringVar(&opts.Name, "name", "", "give the lock the `ID` NAME instead of a random one")
	for _, name := range []string{"user", "bot", "host", "spiffe-id", "reason", "name"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

// Lock builds and checks the lock the options describe.
func (opts *CreateOptions) Lock() (*resource.Lock, error) {
	var set []string
	for _, f := range []struct{ flag, v string }{{"--user", opts.User}, {"--bot", opts.Bot}, {"--host", opts.Host}, {"--spiffe-id", opts.SPIFFEID}} {
		if f.v != "" {
			set = append(set, f.flag)
		}
	}
	switch len(set) {
	case 0:
		return nil, cmdutil.InputErrorf("no target given: lock exactly one of --user, --bot, --host or --spiffe-id")
	case 1:
	default:
		return nil, cmdutil.InputErrorf("%s name two targets: lock exactly one of --user, --bot, --host or --spiffe-id, and make one lock per target", strings.Join(set, " and "))
	}
	if strings.TrimSpace(opts.Reason) == "" {
		return nil, cmdutil.InputErrorf("no --reason given: say why, since every refusal the lock causes shows it")
	}
	if opts.TTL < 0 {
		return nil, cmdutil.InputErrorf("--ttl %s is negative: give how long the lock holds, such as --ttl 24h", opts.TTL)
	}
	if opts.TTL.D() > resource.MaxLockTTL {
		return nil, cmdutil.InputErrorf("--ttl %s is past a year: give at most %s, or remove the lock by hand later", opts.TTL, resource.FormatDuration(resource.MaxLockTTL))
	}
	name := opts.Name
	if name == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("naming the lock: %w", err)
		}
		name = "lock-" + hex.EncodeToString(b[:])
	}
	l := &resource.Lock{
		Header: resource.Header{Kind: resource.KindLock, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.LockSpec{
			Target: resource.LockTarget{User: opts.User, Bot: opts.Bot, Host: opts.Host, SPIFFEID: opts.SPIFFEID},
			Reason: opts.Reason,
		},
	}
	if opts.TTL > 0 {
		l.Spec.Expires = opts.Now().Add(opts.TTL.D()).UTC().Truncate(time.Second)
	}
	if err := l.Validate(); err != nil {
		var fe *resource.FieldError
		if errors.As(err, &fe) {
			return nil, cmdutil.InputErrorf("%s", fe.Message)
		}
		return nil, cmdutil.InputError(err)
	}
	return l, nil
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	l, err := opts.Lock()
	if err != nil {
		return err
	}
	created, printed, err := cmdutil.CreateOne(ctx, opts.Client, opts.Printer, false, l)
	if err != nil || printed {
		return err
	}
	_, err = fmt.Fprintf(opts.IO.Out, "created lock %s on %s\n", created.GetMetadata().Name, l.Spec.Target)
	return err
}
