package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/svidfile"
)

// Output is an SVID the agent keeps written to files, renewed with it, for
// software that cannot speak the Workload API.
type Output struct {
	// Type is x509 or jwt.
	Type string `yaml:"type"`
	// Path is the SPIFFE ID path (or full ID) of the SVID.
	Path string `yaml:"path"`
	// Dir receives the files (see svidfile); created 0700 when missing.
	Dir string `yaml:"dir"`
	// Audiences of a JWT-SVID.
	Audiences []string `yaml:"audiences"`
	// TTL of the SVID; the auth service's default for the type when zero.
	TTL time.Duration `yaml:"ttl"`
}

// outJWTToken is the file a jwt output writes; an x509 output writes
// svidfile's three.
const outJWTToken = "jwt.token"

// outCRL holds the CRLs of the trust domain's X.509 CA keys, PEM, beside
// svidfile's bundle.pem.
const outCRL = "crl.pem"

func (o *Output) validate() error {
	switch o.Type {
	case authv1.SVIDTypeX509:
	case authv1.SVIDTypeJWT:
		if len(o.Audiences) == 0 {
			return errors.New("a jwt output needs audiences")
		}
	default:
		return fmt.Errorf("type %q is unknown: use x509 or jwt", o.Type)
	}
	if o.TTL < 0 {
		return fmt.Errorf("ttl %s is negative", o.TTL)
	}
	if o.Dir == "" {
		return errors.New("dir is missing: say where the files go")
	}
	p := o.Path
	if id, err := spiffeid.FromString(p); err == nil {
		p = id.Path()
	}
	if err := resource.ValidateSPIFFEIDPath(p); err != nil {
		return fmt.Errorf("path: %w", err)
	}
	return nil
}

// runOutput keeps one output's files current: written when its SVID is
// first issued and again at every renewal, each file replaced atomically
// in svidfile's order, so a reader never sees a partial one nor a
// certificate without its key.
func (a *Agent) runOutput(ctx context.Context, n int, o *Output) error {
	st, err := a.waitState(ctx)
	for errors.Is(err, errNoState) {
		st, err = a.waitState(ctx)
	}
	if err != nil {
		return nil // ctx ended
	}
	p := o.Path
	if full, err := spiffeid.FromString(p); err == nil {
		if full.TrustDomain() != st.td {
			return fmt.Errorf("agent config outputs[%d]: %s is not in the trust domain %s", n+1, full, st.td)
		}
		p = full.Path()
	}
	id, err := spiffeid.FromPath(st.td, p)
	if err != nil {
		return fmt.Errorf("agent config outputs[%d]: %w", n+1, err)
	}
	name := fmt.Sprintf("output-%d", n+1)
	en := entitlement{config: name, id: id, key: name + "\x00" + id.String(), x509TTL: o.TTL, jwtTTL: o.TTL}
	auds := normalizeAudiences(o.Audiences)
	if o.Type == authv1.SVIDTypeX509 {
		auds = nil
	}
	a.cache.pin(o.Type, en, auds)
	if err := os.MkdirAll(o.Dir, svidfile.DirMode); err != nil {
		return fmt.Errorf("agent config outputs[%d]: creating %s: %w", n+1, o.Dir, err)
	}

	var written *svid
	var writtenBundle, writtenCRL []byte
	for {
		svidCh, stateCh := a.cache.changed.wait(), a.stateChanged.wait()
		st := a.st.Load()
		svids, errs := a.cache.get(ctx, o.Type, []entitlement{en}, auds, map[string]string{})
		wait := 5 * time.Second
		if s := svids[0]; s != nil {
			if s != written || !slices.Equal(st.x509BundleDER, writtenBundle) || !slices.Equal(st.crlPEM, writtenCRL) {
				if err := writeOutput(o, s, st); err != nil {
					a.logger.Error("writing an SVID output failed", "dir", o.Dir, "error", err)
				} else {
					written, writtenBundle, writtenCRL = s, st.x509BundleDER, st.crlPEM
					a.logger.Info("wrote SVID output", "dir", o.Dir, "spiffe_id", s.spiffeID, "expires", s.expires)
				}
			}
			// JWT-SVIDs renew on demand: come back at half life.
			wait = max(time.Until(s.renewAt()), time.Second)
		} else if errs[0] != nil && ctx.Err() == nil {
			a.logger.Warn("no SVID for output yet", "dir", o.Dir, "error", errs[0])
		}
		select {
		case <-ctx.Done():
			return nil
		case <-svidCh:
		case <-stateCh:
		case <-time.After(wait):
		}
	}
}

func writeOutput(o *Output, s *svid, st *state) error {
	if o.Type == authv1.SVIDTypeJWT {
		return svidfile.WriteJWT(filepath.Join(o.Dir, outJWTToken), s.token)
	}
	bundle := make([][]byte, len(st.x509Authorities))
	for i, c := range st.x509Authorities {
		bundle[i] = c.Raw
	}
	// The CRL goes first: svidfile writes svid.pem last, which readers
	// reload on, so they find the CRL of the new state already in place.
	if len(st.crlPEM) > 0 {
		if err := client.WriteFileAtomic(filepath.Join(o.Dir, outCRL), st.crlPEM, svidfile.FileMode); err != nil {
			return err
		}
	}
	_, err := svidfile.WriteX509(o.Dir, svidfile.X509{Chain: s.chain, Key: s.keyDER, Bundle: bundle})
	return err
}
