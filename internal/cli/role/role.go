// Package role holds `widctl role`: roles grant SPIFFE ID paths (with the
// DNS and IP SANs allowed on them) and admin rules to the users and bots that
// hold them.
package role

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/resource"
)

// NewCmdRole builds the `widctl role` group.
func NewCmdRole(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "role <command>",
		Short: "Manage roles: which SPIFFE IDs their holders may get",
		Long: `A role grants SPIFFE ID paths to the users and bots that hold it.

A path is exact (/svc/web), has * for exactly one segment (/svc/*/api), or
ends in ** for any depth below it (/svc/**). Each granted path carries the DNS
and IP SANs allowed in its X509-SVIDs. Denied paths beat granted ones, in any
role. --max-ttl caps the lifetime of the SVIDs the role allows.

For admin rules and workload identity labels, write the role as YAML and use
"widctl create -f".`,
		Example: `  widctl role create web --spiffe-path '/svc/web/*' --dns-san web.example.com --max-ttl 1h
  widctl role ls
  widctl role get web --format yaml`,
	})
	cmd.AddCommand(
		NewCmdCreate(f, nil),
		NewCmdList(f, nil),
		NewCmdGet(f, nil),
		NewCmdUpdate(f, nil),
		NewCmdRemove(f, nil),
	)
	return cmd
}

// Flags are the role settings create and update share.
type Flags struct {
	Description string
	SPIFFEPaths []string
	DNSSANs     []string
	IPSANs      []string
	DenyPaths   []string
	MaxTTL      resource.Duration
}

func (rf *Flags) register(fs *pflag.FlagSet) {
	fs.SortFlags = false
	fs.StringArrayVar(&rf.SPIFFEPaths, "spiffe-path", nil, "grant SPIFFE IDs matching `PATH`: exact, * for one segment, a final ** for any depth (repeatable)")
	fs.StringSliceVar(&rf.DNSSANs, "dns-san", nil, "allow the DNS SAN `NAME` (or *.domain) on every granted path (repeatable, comma-separated)")
	fs.StringSliceVar(&rf.IPSANs, "ip-san", nil, "allow IP SANs within `CIDR` on every granted path (repeatable, comma-separated)")
	fs.StringArrayVar(&rf.DenyPaths, "deny-path", nil, "deny SPIFFE IDs matching `PATH`, even where another role grants them (repeatable)")
	cmdutil.DurationVar(fs, &rf.MaxTTL, "max-ttl", "cap the lifetime of SVIDs the role allows at `DURATION`, e.g. 1h or 24h")
	fs.StringVar(&rf.Description, "description", "", "say what the role is for in `TEXT`")
}

// checkPaths checks path patterns as typed, naming the flag.
func checkPaths(flag string, ps []string) error {
	for _, p := range ps {
		if err := resource.ValidatePathPattern(p); err != nil {
			return cmdutil.InputErrorf("--%s: %v", flag, err)
		}
	}
	return nil
}

func grants(paths, dns, ip []string) []resource.SPIFFEGrant {
	gs := make([]resource.SPIFFEGrant, len(paths))
	for i, p := range paths {
		gs[i] = resource.SPIFFEGrant{Path: p, DNSSANs: dns, IPSANs: ip}
	}
	return gs
}

// validate checks the role as the auth service will, and words a field error
// in terms of the flags the user typed.
func validate(r *resource.Role) error {
	err := r.Validate()
	if err == nil {
		return nil
	}
	var fe *resource.FieldError
	if errors.As(err, &fe) {
		if flag := flagFor(fe.Field); flag != "" {
			// The core names document fields; here the user typed flags.
			msg := strings.TrimPrefix(fe.Message, fe.Field)
			msg = strings.NewReplacer("ip_sans", "--ip-san", "dns_sans", "--dns-san").Replace(msg)
			return cmdutil.InputErrorf("%s%s", flag, msg)
		}
	}
	return cmdutil.InputError(err)
}

// flagFor maps a role field (spec.allow.spiffe[2].ip_sans[1]) to its flag.
func flagFor(field string) string {
	switch {
	case field == "metadata.description":
		return "--description"
	case field == "spec.options.max_svid_ttl":
		return "--max-ttl"
	case strings.HasPrefix(field, "spec.deny.spiffe"):
		return "--deny-path"
	case strings.HasPrefix(field, "spec.allow.spiffe"):
		switch {
		case strings.Contains(field, ".dns_sans"):
			return "--dns-san"
		case strings.Contains(field, ".ip_sans"):
			return "--ip-san"
		}
		return "--spiffe-path"
	}
	return ""
}

func printChange(w io.Writer, verb string, r resource.Resource) error {
	_, err := fmt.Fprintf(w, "%s %s\n", verb, resource.Ref(r))
	return err
}
