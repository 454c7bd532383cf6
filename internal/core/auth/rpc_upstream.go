package auth

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ImportCA puts an upstream CA above the spiffe CA (see ca.ImportUpstream).
// Every refusal is audited with its reason and changes nothing.
func (s *Server) ImportCA(ctx context.Context, req *authv1.ImportCARequest) (*authv1.ImportCAResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbUpdate); err != nil {
		return nil, err
	}
	c := callerFrom(ctx)
	mode := ca.UpstreamKey
	if len(req.KeyPem) == 0 {
		mode = ca.UpstreamCSR
	}
	refuse := func(code codes.Code, msg string) error {
		s.recordDenial(ctx, audit.Event{
			Type: audit.TypeCAImport, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Reason: msg,
			Resource: resource.ResourceCertAuthority + "/" + string(ca.TypeSPIFFE),
			Details:  map[string]string{"ca_type": string(ca.TypeSPIFFE), "mode": string(mode)},
		})
		return status.Error(code, msg)
	}
	if t, err := ca.ParseType(req.Type); err != nil || t != ca.TypeSPIFFE {
		return nil, refuse(codes.InvalidArgument, fmt.Sprintf("only the spiffe CA can have an upstream CA, not %q: use --type spiffe", req.Type))
	}
	if err := s.refreshCAs(ctx); err != nil {
		return nil, storeError("certificate authorities", err)
	}
	certs, err := ca.ParseCertificatesPEM("--cert", req.CertPem)
	if err != nil {
		return nil, refuse(codes.InvalidArgument, upstreamMessage(err))
	}
	ir := ca.ImportRequest{Certs: certs}
	if len(req.BundlePem) > 0 {
		if ir.Bundle, err = ca.ParseCertificatesPEM("--bundle", req.BundlePem); err != nil {
			return nil, refuse(codes.InvalidArgument, upstreamMessage(err))
		}
	}
	if mode == ca.UpstreamKey {
		if ir.Key, err = ca.ParsePrivateKeyPEM("--key", req.KeyPem); err != nil {
			return nil, refuse(codes.InvalidArgument, upstreamMessage(err))
		}
	}
	ttl, by, err := s.maxIssuedTTL(ctx, ca.TypeSPIFFE)
	if err != nil {
		return nil, storeError("roles", err)
	}
	ir.MinValidity, ir.MinValidityBy = ttl, by
	res, err := s.cas.ImportUpstream(ctx, ir)
	switch {
	case errors.Is(err, ca.ErrUpstream):
		return nil, refuse(codes.InvalidArgument, upstreamMessage(err))
	case errors.Is(err, ca.ErrTransition):
		return nil, refuse(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "importing the upstream CA: %v", err)
	}
	details := map[string]string{
		"ca_type": string(ca.TypeSPIFFE), "mode": string(res.Mode),
		"intermediate_fingerprint": ca.Fingerprint(res.Intermediate.RawSubjectPublicKeyInfo),
		"intermediate_not_after":   res.Intermediate.NotAfter.UTC().Format(time.RFC3339),
		"replaced_fingerprint":     res.Replaced,
		"started_rotation":         fmt.Sprint(res.StartedRotation),
	}
	var roots []string
	for _, r := range res.Roots {
		roots = append(roots, ca.Fingerprint(r.RawSubjectPublicKeyInfo))
	}
	details["root_fingerprints"] = strings.Join(roots, ",")
	if !res.CappedAt.IsZero() {
		details["capped_at"] = res.CappedAt.Format(time.RFC3339)
	}
	if _, err := s.audit.Emit(context.WithoutCancel(ctx), audit.Event{
		Type: audit.TypeCAImport, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
		Resource: resource.ResourceCertAuthority + "/" + string(ca.TypeSPIFFE), Details: details,
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the upstream CA is imported but the audit log could not record it: %v", err)
	}
	s.log.Info("upstream CA imported", "ca", ca.TypeSPIFFE, "mode", res.Mode, "started_rotation", res.StartedRotation)
	resp := &authv1.ImportCAResponse{
		Ca: s.caInfo(res.Doc), Mode: string(res.Mode), Intermediate: res.Intermediate.Raw,
		StartedRotation: res.StartedRotation, ForRotation: res.ForRotation, ReplacedFingerprint: res.Replaced,
		NewFingerprint: ca.Fingerprint(res.Intermediate.RawSubjectPublicKeyInfo),
	}
	for _, r := range res.Roots {
		resp.Roots = append(resp.Roots, r.Raw)
	}
	if !res.CappedAt.IsZero() {
		resp.CappedAt = timestamppb.New(res.CappedAt)
	}
	return resp, nil
}

// upstreamMessage is the refusal's sentence without the sentinel's prefix.
func upstreamMessage(err error) string {
	return strings.TrimPrefix(err.Error(), ca.ErrUpstream.Error()+": ")
}

// CreateCACSR returns a CSR for the spiffe CA's next intermediate.
func (s *Server) CreateCACSR(ctx context.Context, req *authv1.CreateCACSRRequest) (*authv1.CreateCACSRResponse, error) {
	if err := s.authorize(ctx, resource.ResourceCertAuthority, resource.VerbUpdate); err != nil {
		return nil, err
	}
	c := callerFrom(ctx)
	if t, err := ca.ParseType(req.Type); err != nil || t != ca.TypeSPIFFE {
		msg := fmt.Sprintf("only the spiffe CA can have an upstream CA, not %q: use --type spiffe", req.Type)
		s.recordDenial(ctx, audit.Event{
			Type: audit.TypeCACSR, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Reason: msg,
			Resource: resource.ResourceCertAuthority + "/" + req.Type,
		})
		return nil, status.Error(codes.InvalidArgument, msg)
	}
	res, err := s.requestCSR(ctx, c, nil)
	if err != nil {
		return nil, err
	}
	return &authv1.CreateCACSRResponse{CsrPem: csrPEM(res.CSR), Fingerprint: res.Fingerprint, Rotation: res.Rotation}, nil
}

// requestCSR makes (or returns) the pending CSR and audits a new one.
func (s *Server) requestCSR(ctx context.Context, c *caller, rot *ca.PendingRotation) (ca.CSRResult, error) {
	res, err := s.cas.RequestCSR(ctx, rot)
	if err != nil {
		code := codes.Internal
		if errors.Is(err, ca.ErrTransition) {
			code = codes.FailedPrecondition
		}
		return ca.CSRResult{}, status.Errorf(code, "making the spiffe CA's CSR: %v", err)
	}
	if res.New || rot != nil {
		if _, err := s.audit.Emit(context.WithoutCancel(ctx), audit.Event{
			Type: audit.TypeCACSR, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr, Outcome: audit.OutcomeSuccess,
			Resource: resource.ResourceCertAuthority + "/" + string(ca.TypeSPIFFE),
			Details: map[string]string{
				"ca_type": string(ca.TypeSPIFFE), "fingerprint": res.Fingerprint, "rotation": fmt.Sprint(res.Rotation),
			},
		}); err != nil {
			return ca.CSRResult{}, status.Errorf(codes.Unavailable, "the CSR is made but the audit log could not record it: %v", err)
		}
	}
	return res, nil
}

func csrPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// waitingFor says what doc waits for before a rotation can go on.
func waitingFor(doc ca.Document) string {
	if p := doc.PendingCSR; p != nil && p.Rotation != nil && doc.Phase == ca.PhaseStandby {
		return fmt.Sprintf("a signature of the next intermediate (key %s): sign its CSR (widctl ca csr --type %s prints it) with the upstream CA and run widctl ca import --type %s --cert signed.pem",
			ca.Fingerprint(p.PublicKey), doc.Type, doc.Type)
	}
	return ""
}

func upstreamRoots(doc ca.Document) [][]byte {
	if doc.Upstream == nil {
		return nil
	}
	return doc.Upstream.Roots
}
