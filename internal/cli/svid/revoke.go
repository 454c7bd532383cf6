package svid

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
)

// RevokeOptions are the settings of `widctl svid revoke`.
type RevokeOptions struct {
	IO     *iostreams.IOStreams
	Client func(context.Context) (*client.Client, error)

	Serial   string
	SPIFFEID string
	Reason   string
}

// NewCmdRevoke builds `widctl svid revoke`.
func NewCmdRevoke(f *cmdutil.Factory, runF func(*RevokeOptions) error) *cobra.Command {
	opts := &RevokeOptions{IO: f.IOStreams, Client: f.Client}
	cmd := &cobra.Command{
		Use:   "revoke --serial SERIAL | --spiffe-id ID [--reason TEXT]",
		Short: "Revoke X509-SVIDs: list their serials in the trust domain's CRLs",
		Long: `Revoke one X509-SVID by its serial (hex, as "widctl svid inspect" and the
audit log print it), or every unexpired X509-SVID of a SPIFFE ID. The auth
service keeps each revoked serial until its certificate expires and lists it
in the CRL of its X.509 CA ("widctl bundle export --crl", and /crl/<key>.crl
on the auth service's diagnostics listener).

Revoking does not stop new issuance: lock the SPIFFE ID for that
("widctl lock create --spiffe-id ID").

Revoking a SPIFFE ID also revokes its JWT-SVIDs issued until now: every
agent's ValidateJWTSVID refuses them until the last of them expires.`,
		Example: `  widctl svid revoke --serial 3f9a1c0b5d7e2a64e1f0c9b8a7d6e5f4 --reason "key leaked"
  widctl svid revoke --spiffe-id /svc/web --reason "host compromised"`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case opts.Serial == "" && opts.SPIFFEID == "":
				return cmdutil.InputErrorf("nothing to revoke: give --serial SERIAL or --spiffe-id ID")
			case opts.Serial != "" && opts.SPIFFEID != "":
				return cmdutil.InputErrorf("--serial and --spiffe-id were both given: revoke by one of them")
			}
			if runF != nil {
				return runF(opts)
			}
			return revokeRun(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&opts.Serial, "serial", "", "revoke the X509-SVID with serial `HEX`")
	fs.StringVar(&opts.SPIFFEID, "spiffe-id", "", "revoke every unexpired X509-SVID of the SPIFFE `ID` (or path), and its JWT-SVIDs issued until now")
	fs.StringVar(&opts.Reason, "reason", "", "say why in `TEXT`, for the audit log")
	for _, name := range []string{"serial", "spiffe-id", "reason"} {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.NoFileCompletions)
	}
	return cmd
}

func revokeRun(ctx context.Context, opts *RevokeOptions) error {
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: opts.Serial, SpiffeId: opts.SPIFFEID, Reason: opts.Reason})
	if err != nil {
		return err
	}
	for _, r := range resp.GetRevoked() {
		if _, err := fmt.Fprintf(opts.IO.Out, "revoked %s  %s  (listed in the CRL until %s)\n", r.GetSerial(), r.GetSpiffeId(), r.GetExpiresAt().AsTime().UTC().Format("2006-01-02T15:04:05Z")); err != nil {
			return err
		}
	}
	if b, u := resp.GetJwtIssuedBefore(), resp.GetJwtRefusedUntil(); b != nil && u != nil {
		if _, err := fmt.Fprintf(opts.IO.Out, "revoked the JWT-SVIDs of %s issued before %s  (refused by agents until %s)\n", opts.SPIFFEID, b.AsTime().UTC().Format("2006-01-02T15:04:05Z"), u.AsTime().UTC().Format("2006-01-02T15:04:05Z")); err != nil {
			return err
		}
	}
	return nil
}
