package agentcmd

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/svidfile"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// apiOptions are the settings shared by the api subcommands.
type apiOptions struct {
	socket  string
	timeout time.Duration
	format  string
}

func (o *apiOptions) addr() string {
	s := o.socket
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

func (o *apiOptions) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.socket, "socket", "", "Workload API socket (default $SPIFFE_ENDPOINT_SOCKET, else "+paths.DefaultWorkloadSocket()+")")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for an answer")
	f.StringVar(&o.format, "format", "text", "output format: text or json")
}

func (o *apiOptions) check() error {
	if o.format != "text" && o.format != "json" {
		return FlagError{fmt.Errorf("--format %q is unknown: use text or json", o.format)}
	}
	if o.timeout <= 0 {
		return FlagError{fmt.Errorf("--timeout %s must be positive", o.timeout)}
	}
	return nil
}

func newAPICmd(out io.Writer) *cobra.Command {
	api := &cobra.Command{
		Use:   "api",
		Short: "Talk to the SPIFFE Workload API as a workload would",
		Long: `Talk to a Workload API socket (widagent's, or any SPIFFE agent's) with
go-spiffe's client, as a workload would: the agent attests this process and
answers with what it is entitled to.`,
		Example: "  widagent api fetch x509\n  widagent api fetch jwt --audience https://api.example.com",
	}
	fetch := &cobra.Command{
		Use:     "fetch",
		Short:   "Fetch SVIDs from the Workload API",
		Example: "  widagent api fetch x509 --write ./svid\n  widagent api fetch jwt --audience web",
	}
	fetch.AddCommand(newFetchX509Cmd(out), newFetchJWTCmd(out))
	api.AddCommand(fetch)
	return api
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

type x509Out struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Hint      string    `json:"hint,omitempty"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"not_after"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Bundle    string    `json:"bundle_trust_domain"`
	Authority []string  `json:"bundle_authorities_sha256"`
}

func newFetchX509Cmd(out io.Writer) *cobra.Command {
	var o apiOptions
	var write string
	cmd := &cobra.Command{
		Use:   "x509",
		Short: "Fetch X509-SVIDs and the trust bundle",
		Long: `Fetch the X509-SVIDs this process is entitled to and the trust bundle.
With --write DIR, writes svid.pem (chain), svid.key and bundle.pem for the
first SVID, each replaced atomically, key first and certificate last, all
mode 0600 in a directory made 0700.`,
		Example: "  widagent api fetch x509\n  SPIFFE_ENDPOINT_SOCKET=unix:///tmp/w.sock widagent api fetch x509 --format json\n  widagent api fetch x509 --write ./svid",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			addr := o.addr()
			x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
			if err != nil {
				return apiError(addr, err)
			}
			var rows []x509Out
			for _, s := range x.SVIDs {
				r := x509Out{SPIFFEID: s.ID.String(), Hint: s.Hint, Serial: ca.FormatSerial(s.Certificates[0].SerialNumber),
					NotAfter: s.Certificates[0].NotAfter.UTC(), DNSNames: s.Certificates[0].DNSNames, Bundle: s.ID.TrustDomain().IDString()}
				if b, ok := x.Bundles.Get(s.ID.TrustDomain()); ok {
					for _, c := range b.X509Authorities() {
						sum := sha256.Sum256(c.Raw)
						r.Authority = append(r.Authority, hex.EncodeToString(sum[:]))
					}
				}
				rows = append(rows, r)
			}
			if write != "" && len(x.SVIDs) > 0 {
				if err := writeX509(write, x.SVIDs[0], x.Bundles); err != nil {
					return err
				}
			}
			if o.format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SPIFFE ID\tHINT\tEXPIRES\tSERIAL")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.SPIFFEID, dash(r.Hint), r.NotAfter.Local().Format(time.RFC3339), r.Serial)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if write != "" {
				fmt.Fprintf(out, "\nWrote svid.pem, svid.key and bundle.pem for %s to %s\n", rows[0].SPIFFEID, write)
			}
			return nil
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&write, "write", "", "write the first SVID's svid.pem, svid.key and bundle.pem into this directory")
	return cmd
}

type jwtOut struct {
	SPIFFEID string    `json:"spiffe_id"`
	Hint     string    `json:"hint,omitempty"`
	Audience []string  `json:"audience"`
	Expiry   time.Time `json:"expiry"`
	Token    string    `json:"token"`
}

func newFetchJWTCmd(out io.Writer) *cobra.Command {
	var o apiOptions
	var audiences []string
	var spiffeID string
	cmd := &cobra.Command{
		Use:     "jwt",
		Short:   "Fetch JWT-SVIDs for an audience",
		Long:    "Fetch the JWT-SVIDs this process is entitled to, minted for the given audiences.",
		Example: "  widagent api fetch jwt --audience https://api.example.com\n  widagent api fetch jwt --audience web --spiffe-id spiffe://example.org/uid/1000",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if len(audiences) == 0 {
				return FlagError{errors.New("--audience is required: a JWT-SVID is minted for the audiences that will validate it")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			addr := o.addr()
			c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
			if err != nil {
				return apiError(addr, err)
			}
			defer c.Close()
			params := jwtsvid.Params{Audience: audiences[0], ExtraAudiences: audiences[1:]}
			if spiffeID != "" {
				if params.Subject, err = spiffeid.FromString(spiffeID); err != nil {
					return FlagError{fmt.Errorf("--spiffe-id %q is not a SPIFFE ID: %v", spiffeID, err)}
				}
			}
			svids, err := c.FetchJWTSVIDs(ctx, params)
			if err != nil {
				return apiError(addr, err)
			}
			var rows []jwtOut
			for _, s := range svids {
				rows = append(rows, jwtOut{SPIFFEID: s.ID.String(), Hint: s.Hint, Audience: s.Audience, Expiry: s.Expiry.UTC(), Token: s.Marshal()})
			}
			if o.format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			for _, r := range rows {
				fmt.Fprintf(out, "%s (expires %s)\n%s\n", r.SPIFFEID, r.Expiry.Local().Format(time.RFC3339), r.Token)
			}
			return nil
		},
	}
	o.bind(cmd)
	cmd.Flags().StringSliceVar(&audiences, "audience", nil, "audience the token is for (repeatable)")
	cmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only this SPIFFE ID's JWT-SVID")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeX509 writes s and the bundle of its trust domain into dir.
func writeX509(dir string, s *x509svid.SVID, bundles *x509bundle.Set) error {
	key, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		return fmt.Errorf("encoding the SVID's key: %w", err)
	}
	f := svidfile.X509{Key: key}
	for _, c := range s.Certificates {
		f.Chain = append(f.Chain, c.Raw)
	}
	if b, ok := bundles.Get(s.ID.TrustDomain()); ok {
		for _, c := range b.X509Authorities() {
			f.Bundle = append(f.Bundle, c.Raw)
		}
	}
	if _, err := svidfile.WriteX509(dir, f); err != nil {
		return fmt.Errorf("writing the X509-SVID %s to %s: %w", s.ID, dir, err)
	}
	return nil
}
