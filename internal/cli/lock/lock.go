// Package lock holds `widctl lock`: a lock takes an identity back before
// its certificates expire. While it holds, the auth service refuses every
// call of a locked user or bot (and of bots on a locked host), ends their
// open streams, and refuses to issue a locked SPIFFE ID; agents stop
// serving SVIDs of a locked SPIFFE ID.
package lock

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdLock builds the `widctl lock` group.
func NewCmdLock(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "lock <command>",
		Short: "Lock a user, bot, host or SPIFFE ID out before its certificates expire",
		Long: `A lock takes an identity back at once. While it holds, the auth service
refuses every call of a locked user or bot, and of every bot whose agent runs
on a locked host, and ends their open streams within a second; it refuses to
issue a locked SPIFFE ID, or any ID under its path; and agents stop serving
SVIDs of a locked SPIFFE ID. Every refusal names the lock and its reason, and
is audited.

A lock holds until its --ttl runs out (at most a year) or until it is
removed with "widctl lock rm ID". Locks are resources: "widctl create -f"
takes them as YAML too (kind: lock).`,
		Example: `  widctl lock create --bot web-agent --reason "host compromised" --ttl 24h
  widctl lock create --spiffe-id /svc/payments --reason "key leaked"
  widctl lock ls
  widctl lock rm lock-3f9a1c0b`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindLock, resourcecmd.Help{
			Short: "List locks, each with its ID first",
			Example: `  widctl lock ls
  widctl lock ls --format yaml`,
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindLock, resourcecmd.Help{
			Short:   "Show a lock",
			Example: "  widctl lock get lock-3f9a1c0b",
		}, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindLock, resourcecmd.Help{
			Short: "Remove a lock, restoring service to what it locked",
			Long: `Remove a lock by its ID, as "widctl lock ls" shows it. What it locked is
served again at once, with no restart: agents reconnect and renew.`,
			Example: "  widctl lock rm lock-3f9a1c0b",
		}, nil),
	)
	return cmd
}
