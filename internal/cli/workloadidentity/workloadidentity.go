// Package workloadidentity holds `widctl workload-identity`: workload
// identities say which SPIFFE ID (a template filled in from the workload's
// attestation attributes) an agent gives the workloads whose attributes
// match their rules.
package workloadidentity

import (
	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdWorkloadIdentity builds the `widctl workload-identity` group.
func NewCmdWorkloadIdentity(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:     "workload-identity <command>",
		Aliases: []string{"wi"},
		Short:   "Manage workload identities: which SPIFFE ID a matching workload gets",
		Long: `A workload identity gives the workloads an agent attests a SPIFFE ID. Its
rules test the workload's attributes (workload.unix.uid, workload.unix.path,
...); a workload that matches any rule gets the SPIFFE ID template filled in
with its own attributes, such as /uid/{{ workload.unix.uid }}.

Agents issue only the workload identities their bot's roles select by label
(workload_identity_labels). "widctl explain --workload-attrs" shows which
identities a workload with given attributes gets, and why not the others.

"wi" is short for "workload-identity".`,
		Example: `  widctl workload-identity create web --spiffe-id /svc/web --rule workload.unix.user=web
  widctl wi ls
  widctl wi get web --format yaml
  widctl explain --workload-attrs workload.unix.uid=1000,workload.unix.user=web`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		resourcecmd.NewCmdListKind(f, resource.KindWorkloadIdentity, resourcecmd.Help{
			Short: "List workload identities",
			Long: `List workload identities: the SPIFFE ID template, the hint, the rules in the
form --rule takes (one rule after another, separated by "; ") and the labels.`,
			Example: `  widctl workload-identity ls
  widctl wi ls --format yaml > identities.yaml`,
		}, nil),
		resourcecmd.NewCmdGetKind(f, resource.KindWorkloadIdentity, resourcecmd.Help{
			Short: "Show a workload identity",
			Long: `Show a workload identity. With --format yaml this is the document that
"widctl create -f" accepts, the same as "widctl get workload_identity/NAME --format yaml".`,
			Example: `  widctl workload-identity get web
  widctl wi get web --format yaml`,
		}, nil),
		resourcecmd.NewCmdRemoveKind(f, resource.KindWorkloadIdentity, resourcecmd.Help{
			Short: "Remove a workload identity",
			Long: `Remove a workload identity. Agents stop issuing it; SVIDs already issued
from it stay valid until they expire.`,
			Example: `  widctl workload-identity rm web`,
		}, nil),
	)
	return cmd
}
