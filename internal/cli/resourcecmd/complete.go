package resourcecmd

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// completionTimeout bounds the auth service's answer to a <TAB>: a shell
// waiting longer than this is worse than no completions.
const completionTimeout = 2 * time.Second

// CompleteNames completes the first argument with the names of kind's
// resources, asked of the auth service. Anything that goes wrong (no auth
// service, no login, a refusal) gives no completions and prints nothing: a
// <TAB> must never print an error into the middle of a command line.
func CompleteNames(f *cmdutil.Factory, kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return resourceNames(cmd.Context(), f.Client, kind), cobra.ShellCompDirectiveNoFileComp
	}
}

// CompleteNameList completes a comma-separated flag value (--roles a,b) with
// kind's names, keeping what is already typed before the last comma.
func CompleteNameList(f *cmdutil.Factory, kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		done := ""
		if i := strings.LastIndex(toComplete, ","); i >= 0 {
			done = toComplete[:i+1]
		}
		var out []string
		for _, n := range resourceNames(cmd.Context(), f.Client, kind) {
			out = append(out, done+n)
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// completeTargets completes KIND and KIND/NAME for get and rm. needName is
// true for rm, which takes no bare kind.
func completeTargets(f *cmdutil.Factory, needName bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		typed, _, hasSlash := strings.Cut(toComplete, "/")
		if !hasSlash {
			var out []string
			for _, k := range resource.Kinds {
				if !needName {
					out = append(out, k)
				}
				out = append(out, k+"/")
			}
			// No space after "role/": the name comes next.
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		kind, err := resource.NormalizeKind(typed)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range resourceNames(cmd.Context(), f.Client, kind) {
			out = append(out, typed+"/"+n)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func resourceNames(ctx context.Context, dial func(context.Context) (*client.Client, error), kind string) []string {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return nil
	}
	defer c.Close()
	rs, _, err := cmdutil.ListResources(ctx, c, kind)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		names = append(names, r.GetMetadata().Name)
	}
	return names
}
