// Package svid holds `widctl svid`: short-lived SVIDs for people and
// scripts, issued to whatever identity widctl has (the admin socket, or a
// user's login), and the inspection of SVIDs against the trust bundle.
// Private keys are made here and never leave the machine: only a CSR is sent.
package svid

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/core/svidfile"
)

// Names of the files issue writes into --output.
const (
	FileCert   = svidfile.CertFile
	FileKey    = svidfile.KeyFile
	FileBundle = svidfile.BundleFile
	FileToken  = "svid.token"
)

// NewCmdSVID builds the `widctl svid` group.
func NewCmdSVID(f *cmdutil.Factory) *cobra.Command {
	cmd := cmdutil.Group(&cobra.Command{
		Use:   "svid <command>",
		Short: "Issue short-lived SVIDs to yourself and inspect SVIDs",
		Long: `Issue an X509-SVID or a JWT-SVID for a SPIFFE ID your identity is granted,
and inspect SVIDs against the trust domain's bundle.

widctl issues to the identity it talks to the auth service with: the admin
socket next to widagent (audited as admin@HOST), or your login.`,
		Example: `  widctl svid issue /team/alice/laptop --ttl 1h --output ~/.wid/laptop
  widctl svid issue /team/alice/cli --type jwt --audience api --output -
  widctl svid inspect ~/.wid/laptop/svid.pem`,
	})
	cmd.AddCommand(NewCmdIssue(f, nil), NewCmdInspect(f, nil), NewCmdRevoke(f, nil))
	return cmd
}

// keyFingerprint is sha256:HEX of a public key's SubjectPublicKeyInfo, the
// form CA pins take, so that the same key reads the same everywhere.
func keyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// typeLabel names an SVID type as the SPIFFE standards do.
func typeLabel(typ string) string {
	if typ == authv1.SVIDTypeJWT {
		return "JWT-SVID"
	}
	return "X509-SVID"
}
