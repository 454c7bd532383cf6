package agent

import (
	"context"
	"encoding/pem"
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
)

// Output is an SVID the agent keeps written to files, renewed with it, for
// software that cannot speak the Workload API.
type Output struct {
	// Type is x509 or jwt.
	Type string `mapstructure:"type" yaml:"type"`
	// Path is the SPIFFE ID path (or full ID) of the SVID.
	Path string `mapstructure:"path" yaml:"path"`
	// Dir receives the files; created 0700 when missing.
	Dir string `mapstructure:"dir" yaml:"dir"`
	// Audiences of a JWT-SVID.
	Audiences []string `mapstructure:"audiences" yaml:"audiences"`
	// TTL of the SVID; the auth service's default for the type when zero.
	TTL time.Duration `mapstructure:"ttl" yaml:"ttl"`
}

// Files an output writes.
const (
	outSVID     = "svid.pem"
	outKey      = "svid.key"
	outBundle   = "bundle.pem"
	outJWTToken = "jwt.token"
)

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
// (write to a temp file, then rename) so a reader never sees a partial one.
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
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return fmt.Errorf("agent config outputs[%d]: creating %s: %w", n+1, o.Dir, err)
	}

	var written *svid
	var writtenBundle []byte
	for {
		svidCh, stateCh := a.cache.changed.wait(), a.stateChanged.wait()
		st := a.st.Load()
		svids, errs := a.cache.get(ctx, o.Type, []entitlement{en}, auds, map[string]string{})
		wait := 5 * time.Second
		if s := svids[0]; s != nil {
			if s != written || !slices.Equal(st.x509BundleDER, writtenBundle) {
				if err := writeOutput(o, s, st); err != nil {
					a.logger.Error("writing an SVID output failed", "dir", o.Dir, "error", err)
				} else {
					written, writtenBundle = s, st.x509BundleDER
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
		return client.WriteFileAtomic(filepath.Join(o.Dir, outJWTToken), []byte(s.token+"\n"), 0o600)
	}
	var certs, bundle []byte
	for _, der := range s.chain {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, c := range st.x509Authorities {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// svid.pem goes last, so that a reader that reloads when it changes
	// finds the matching key and bundle already in place. In between, a
	// reader may pair the new key with the old certificate for a moment.
	if err := client.WriteFileAtomic(filepath.Join(o.Dir, outKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: s.keyDER}), 0o600); err != nil {
		return err
	}
	if err := client.WriteFileAtomic(filepath.Join(o.Dir, outBundle), bundle, 0o644); err != nil {
		return err
	}
	return client.WriteFileAtomic(filepath.Join(o.Dir, outSVID), certs, 0o644)
}
