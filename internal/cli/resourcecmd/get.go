// Package resourcecmd holds the generic resource commands, which work on any
// kind: `widctl create -f`, `widctl get` and `widctl rm`. The per-noun
// commands (role get, user ls, ...) run the same code, so that both ways of
// asking print the same thing.
package resourcecmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// GetOptions are the settings of `widctl get`.
type GetOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	// Kind is the canonical kind.
	Kind string
	// Name is the resource to show; empty lists every resource of Kind.
	Name string
}

// NewCmdGet builds `widctl get`.
func NewCmdGet(f *cmdutil.Factory, runF func(*GetOptions) error) *cobra.Command {
	opts := &GetOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "get KIND[/NAME]",
		Short: "Show a resource, or list every resource of a kind",
		Long: `Show one resource (KIND/NAME) or list every resource of a kind (KIND).

Kinds are ` + strings.Join(resource.Kinds, ", ") + `; plurals work too.
With --format yaml or json the output is the resource document itself, which
"widctl create -f" accepts back.`,
		Example: `  widctl get roles
  widctl get role/web
  widctl get role/web --format yaml > web.yaml
  widctl get workload_identity/api --format json`,
		Args:              cmdutil.ExactArgs(1, "what to show, KIND or KIND/NAME"),
		ValidArgsFunction: completeTargets(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := parseTarget(args[0])
			if err != nil {
				return err
			}
			opts.Kind, opts.Name = kind, name
			if runF != nil {
				return runF(opts)
			}
			return GetRun(cmd.Context(), opts)
		},
	}
	return cmd
}

// parseTarget reads KIND/NAME or KIND.
func parseTarget(s string) (kind, name string, err error) {
	if strings.Contains(s, "/") {
		kind, name, err = resource.ParseRef(s)
	} else {
		kind, err = resource.NormalizeKind(s)
	}
	if err != nil {
		return "", "", cmdutil.InputError(err)
	}
	return kind, name, nil
}

// GetRun shows one resource or lists a kind.
func GetRun(ctx context.Context, opts *GetOptions) error {
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if opts.Name != "" {
		r, err := cmdutil.GetResource(ctx, c, opts.Kind, opts.Name)
		if err != nil {
			return err
		}
		return p.Resource(r)
	}
	rs, corrupt, err := cmdutil.ListResources(ctx, c, opts.Kind)
	if err != nil {
		return err
	}
	for _, cr := range corrupt {
		if _, err := fmt.Fprintln(opts.IO.ErrOut, cmdutil.CorruptWarning(cr)); err != nil {
			return err
		}
	}
	if len(rs) == 0 && p.Format == output.Text {
		// Nothing on stdout, so that scripts reading the table see no rows.
		_, err := fmt.Fprintln(opts.IO.ErrOut, emptyHint(opts.Kind))
		return err
	}
	return p.Resources(opts.Kind, rs)
}

func emptyHint(kind string) string {
	switch kind {
	case resource.KindRole:
		return "no roles yet: create one with widctl role create NAME --spiffe-path PATH"
	case resource.KindUser:
		return "no users yet: create one with widctl user create NAME --roles ROLE"
	case resource.KindBot:
		return "no bots yet: create one with widctl bot create NAME --roles ROLE"
	case resource.KindJoinToken:
		return "no join tokens: make one with widctl token create --bot NAME"
	case resource.KindWorkloadIdentity:
		return "no workload identities yet: create one with widctl workload-identity create NAME --spiffe-id TEMPLATE --rule CONDITION"
	case resource.KindFederation:
		return "no federations yet: federate with a trust domain with widctl federation create TRUST_DOMAIN --url URL --profile https_spiffe --bundle FILE"
	case resource.KindLock:
		return "no locks: lock a target with widctl lock create --bot NAME --reason TEXT"
	}
	return "no " + kind + " resources"
}
