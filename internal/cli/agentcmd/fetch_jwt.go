package agentcmd

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
)

// FetchJWTOptions are the settings of `widagent api fetch jwt`.
type FetchJWTOptions struct {
	APIOptions
	Audiences []string
	// SPIFFEID, when set, asks for this SPIFFE ID's JWT-SVID only.
	SPIFFEID spiffeid.ID
}

// JWTRow is one JWT-SVID as fetch jwt prints it, in JSON and YAML too.
type JWTRow struct {
	SPIFFEID string    `json:"spiffe_id" yaml:"spiffe_id"`
	Hint     string    `json:"hint,omitempty" yaml:"hint,omitempty"`
	Audience []string  `json:"audience" yaml:"audience"`
	Expiry   time.Time `json:"expiry" yaml:"expiry"`
	Token    string    `json:"token" yaml:"token"`
}

// NewCmdFetchJWT builds `widagent api fetch jwt`.
func NewCmdFetchJWT(f *cmdutil.Factory, runF func(*FetchJWTOptions) error) *cobra.Command {
	opts := &FetchJWTOptions{APIOptions: newAPIOptions(f)}
	var spiffeID string
	cmd := &cobra.Command{
		Use:     "jwt",
		Short:   "Fetch JWT-SVIDs for an audience",
		Long:    "Fetch the JWT-SVIDs this process is entitled to, minted for the given audiences.",
		Example: "  widagent api fetch jwt --audience https://api.example.com\n  widagent api fetch jwt --audience web --spiffe-id spiffe://example.org/uid/1000",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			check := func() error {
				if len(opts.Audiences) == 0 {
					return cmdutil.InputErrorf("--audience is required: a JWT-SVID is minted for the audiences that will validate it")
				}
				if spiffeID == "" {
					return nil
				}
				id, err := spiffeid.FromString(spiffeID)
				if err != nil {
					return cmdutil.InputErrorf("--spiffe-id %q is not a SPIFFE ID: %v", spiffeID, err)
				}
				opts.SPIFFEID = id
				return nil
			}
			return runAPI(cmd.Context(), opts, &opts.APIOptions, check, runF, fetchJWTRun)
		},
	}
	opts.bind(cmd)
	cmd.Flags().StringSliceVar(&opts.Audiences, "audience", nil, "audience the token is for (repeatable)")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only this SPIFFE ID's JWT-SVID")
	return cmd
}

func fetchJWTRun(ctx context.Context, p *output.Printer, addr string, opts *FetchJWTOptions) error {
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return apiError(addr, err)
	}
	defer c.Close()
	params := jwtsvid.Params{Audience: opts.Audiences[0], ExtraAudiences: opts.Audiences[1:], Subject: opts.SPIFFEID}
	svids, err := c.FetchJWTSVIDs(ctx, params)
	if err != nil {
		return apiError(addr, err)
	}
	var rows []JWTRow
	for _, s := range svids {
		rows = append(rows, JWTRow{SPIFFEID: s.ID.String(), Hint: s.Hint, Audience: s.Audience, Expiry: s.Expiry.UTC(), Token: s.Marshal()})
	}
	return p.Print(rows, func(w io.Writer) error {
		for _, r := range rows {
			if _, err := fmt.Fprintf(w, "%s (expires %s)\n%s\n", r.SPIFFEID, p.Time(r.Expiry), r.Token); err != nil {
				return err
			}
		}
		return nil
	})
}
