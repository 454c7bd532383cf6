package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/ca"
)

// The bundle endpoint serves this trust domain's SPIFFE bundle to other
// trust domains (SPIFFE Federation), over TLS with either profile:
// https_spiffe, with an X509-SVID of spiffe://<td>/_wid/bundle-endpoint
// that follows CA rotations, or https_web, with a certificate and key the
// operator gives. Its mux takes more routes (OIDC discovery, CRLs).

// bundleEndpointSVIDTTL is the life of the endpoint's X509-SVID; it is
// renewed at half of it, and at once when another key signs.
const bundleEndpointSVIDTTL = time.Hour

// webCertCheckEvery bounds how often the https_web files are looked at.
const webCertCheckEvery = time.Second

type bundleEndpoint struct {
	lis  net.Listener
	mux  *http.ServeMux
	hint time.Duration

	mu sync.Mutex
	// https_spiffe: the SVID served and the CA key that signed it.
	cert     *tls.Certificate
	signer   string
	renewAt  time.Time
	svidKey  crypto.Signer
	certFile string
	keyFile  string
	// https_web: the files' state when last read, and when last looked at.
	fileStamp string
	checked   time.Time
}

// BundleEndpointMux is the bundle endpoint's HTTP mux, nil without
// Config.BundleEndpointListen: other parts of the auth service add routes
// to it before Run.
func (s *Server) BundleEndpointMux() *http.ServeMux {
	if s.bundleEndpoint == nil {
		return nil
	}
	return s.bundleEndpoint.mux
}

// openBundleEndpoint binds the bundle endpoint's listener and builds its mux.
func (s *Server) openBundleEndpoint() error {
	addr := s.cfg.BundleEndpointListen
	if addr == "" {
		return nil
	}
	if (s.cfg.BundleEndpointCertFile == "") != (s.cfg.BundleEndpointKeyFile == "") {
		return errors.New("the bundle endpoint's https_web profile needs both a certificate and a key file: give --bundle-endpoint-cert and --bundle-endpoint-key together")
	}
	e := &bundleEndpoint{mux: http.NewServeMux(), hint: s.cfg.BundleRefreshHint, certFile: s.cfg.BundleEndpointCertFile, keyFile: s.cfg.BundleEndpointKeyFile}
	if e.hint <= 0 {
		e.hint = ca.BundleRefreshHint
	}
	if e.certFile != "" {
		// Read now, so that a wrong file stops the start with its reason.
		if _, err := e.webCert(time.Now(), s.log); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the bundle endpoint: %w (pick another address with --bundle-endpoint-listen)", addr, err)
	}
	e.lis = lis
	e.mux.HandleFunc("GET /{$}", s.serveBundle)
	// Relying parties in other trust domains that check CRLs fetch ours
	// where they fetch the bundle.
	e.mux.Handle("/crl/", s.CRLHandler())
	s.bundleEndpoint = e
	s.info.BundleEndpoint = "https://" + lis.Addr().String() + "/"
	if err := s.addOIDCRoutes(e.mux); err != nil {
		lis.Close()
		return err
	}
	return nil
}

// serveBundle answers with the trust domain's SPIFFE bundle.
func (s *Server) serveBundle(w http.ResponseWriter, _ *http.Request) {
	b, err := s.cas.Bundle()
	if err != nil {
		http.Error(w, "the trust bundle is not loaded", http.StatusServiceUnavailable)
		return
	}
	b.SetRefreshHint(s.bundleEndpoint.hint)
	data, err := b.Marshal()
	if err != nil {
		s.log.Error("encoding the trust bundle for the bundle endpoint", "error", err)
		http.Error(w, "the trust bundle could not be encoded", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(data)
}

// runBundleEndpoint serves until ctx ends.
func (s *Server) runBundleEndpoint(ctx context.Context) error {
	e := s.bundleEndpoint
	srv := &http.Server{
		Handler:           e.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.bundleEndpointCertificate},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(e.lis, "", "") }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serving the bundle endpoint: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	}
}

// bundleEndpointCertificate is the certificate the endpoint serves with.
func (s *Server) bundleEndpointCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	e := s.bundleEndpoint
	if e.certFile != "" {
		return e.webCert(time.Now(), s.log)
	}
	return s.bundleEndpointSVID()
}

// bundleEndpointSVID returns the endpoint's X509-SVID, minting a new one
// at half its life or when another spiffe CA key signs.
func (s *Server) bundleEndpointSVID() (*tls.Certificate, error) {
	e := s.bundleEndpoint
	ks, err := s.cas.Signer(ca.TypeSPIFFE)
	if err != nil {
		return nil, fmt.Errorf("getting the spiffe CA: %w", err)
	}
	now := s.clock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cert != nil && e.signer == ks.ID && now.Before(e.renewAt) {
		return e.cert, nil
	}
	if e.svidKey == nil {
		if e.svidKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("making the bundle endpoint's key: %w", err)
		}
	}
	svid, err := s.issuer.SignBundleEndpointSVID(e.svidKey.Public(), bundleEndpointSVIDTTL)
	if err != nil {
		err = fmt.Errorf("issuing the bundle endpoint's X509-SVID: %w", err)
		s.log.Error("the bundle endpoint has no certificate to serve with", "error", err)
		return nil, err
	}
	cert := &tls.Certificate{PrivateKey: e.svidKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	e.cert, e.signer = cert, ks.ID
	e.renewAt = svid.NotBefore.Add(svid.NotAfter.Sub(svid.NotBefore) / 2)
	return cert, nil
}

// webCert returns the operator's certificate, read again when its files
// changed; a pair that no longer loads leaves the last good one served.
func (e *bundleEndpoint) webCert(now time.Time, log interface{ Warn(string, ...any) }) (*tls.Certificate, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cert != nil && now.Sub(e.checked) < webCertCheckEvery {
		return e.cert, nil
	}
	e.checked = now
	stamp, err := fileStamp(e.certFile, e.keyFile)
	if err == nil && e.cert != nil && stamp == e.fileStamp {
		return e.cert, nil
	}
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.LoadX509KeyPair(e.certFile, e.keyFile)
	}
	if err != nil {
		err = fmt.Errorf("loading the bundle endpoint's certificate %s and key %s: %w", e.certFile, e.keyFile, err)
		if e.cert != nil {
			log.Warn("the bundle endpoint keeps its last certificate", "error", err)
			return e.cert, nil
		}
		return nil, err
	}
	e.cert, e.fileStamp = &cert, stamp
	return e.cert, nil
}

// fileStamp names the files' sizes and modification times: a change to
// either file changes it.
func fileStamp(files ...string) (string, error) {
	var b bytes.Buffer
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
