package auth

import (
	"context"
	"errors"
	"strings"

	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/reqlimit"
	"github.com/wid-project/wid/internal/core/x509pop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Size bounds of what a caller sends, in bytes unless said otherwise.
// Everything here can reach the store or the audit log; an anonymous Join
// or Login that could put megabytes into an audit event would let anyone on
// the network fill the disk.
const (
	// maxStringField bounds any string no entry below names.
	maxStringField = 4096
	// maxBytesField bounds any byte string no entry below names (CSRs and
	// public keys are well under 1 KiB).
	maxBytesField = 16 << 10
	// maxListItems bounds any list or map no entry below names.
	maxListItems = 1024
	// maxSPIFFEID is the SPIFFE ID standard's URI length limit.
	maxSPIFFEID = 2048
	// maxResourceDoc bounds one resource document (YAML or JSON).
	maxResourceDoc = 256 << 10
	// maxAttributeKey and maxAttributeValue bound workload attributes and
	// labels (an executable path may be as long as PATH_MAX).
	maxAttributeKey   = 256
	maxAttributeValue = 4096
	// maxAudience bounds one JWT audience.
	maxAudience = 1024
	// maxJWTAudiences bounds the audiences of one JWT-SVID.
	maxJWTAudiences = 32
	// maxServiceAccountToken bounds a kubernetes service-account token
	// (a few KiB in practice).
	maxServiceAccountToken = 16 << 10
	// maxSecret bounds invites (64 hex digits when ours). A join token may
	// be a kubernetes token sent the wrong way, and is bounded like one.
	maxSecret = 128
	// maxX509PopChain bounds the certificates of an x509pop join (each
	// under maxBytesField): a leaf and a few intermediates.
	maxX509PopChain = 8
	// maxSignature bounds a challenge signature (RSA-8192 is 1 KiB).
	maxSignature = 1024
)

// requestLimits are the auth service's bounds, per field full name. The
// defaults bound every field not listed, including ones added later.
var requestLimits = &reqlimit.Limits{
	String: maxStringField,
	Bytes:  maxBytesField,
	Items:  maxListItems,
	Fields: map[string]int{
		// Anonymous: Join and Login.
		"wid.auth.v1.JoinRequest.token":                 maxServiceAccountToken,
		"wid.auth.v1.JoinRequest.host":                  maxHostLength,
		"wid.auth.v1.JoinRequest.join_method":           64,
		"wid.auth.v1.JoinRequest.service_account_token": maxServiceAccountToken,
		"wid.auth.v1.JoinRequest.x509_chain#":           maxX509PopChain,
		"wid.auth.v1.JoinRequest.challenge":             x509pop.ChallengeLen,
		"wid.auth.v1.JoinRequest.challenge_signature":   maxSignature,
		"wid.auth.v1.JoinChallengeRequest.token":        maxHostLength,
		"wid.auth.v1.LoginRequest.user":                 maxHostLength,
		"wid.auth.v1.LoginRequest.password":             login.MaxPasswordLength,
		"wid.auth.v1.LoginRequest.invite":               maxSecret,
		"wid.auth.v1.LoginRequest.totp_code":            16,

		// Agents.
		"wid.auth.v1.WatchAgentRequest.host":                   maxHostLength,
		"wid.auth.v1.ReportAgentStatusRequest.host":            maxHostLength,
		"wid.auth.v1.RecordAttestationsRequest.host":           maxHostLength,
		"wid.auth.v1.RecordAttestationsRequest.attestations#":  MaxAttestations,
		"wid.auth.v1.Attestation.id":                           128,
		"wid.auth.v1.Attestation.attributes.key":               maxAttributeKey,
		"wid.auth.v1.Attestation.attributes":                   maxAttributeValue,
		"wid.auth.v1.Attestation.spiffe_ids":                   maxSPIFFEID,
		"wid.auth.v1.Attestation.outcome":                      32,
		"wid.auth.v1.Attestation.method":                       64,
		"wid.auth.v1.Attestation.reason":                       maxStringField,
		"wid.auth.v1.IssueWorkloadSVIDsRequest.attributes.key": maxAttributeKey,
		"wid.auth.v1.IssueWorkloadSVIDsRequest.attributes":     maxAttributeValue,
		"wid.auth.v1.IssueWorkloadSVIDsRequest.svids#":         MaxWorkloadSVIDs,
		"wid.auth.v1.WorkloadSVIDRequest.spiffe_id":            maxSPIFFEID,
		"wid.auth.v1.WorkloadSVIDRequest.audience":             maxAudience,
		"wid.auth.v1.WorkloadSVIDRequest.audience#":            maxJWTAudiences,

		// Users and admins.
		"wid.auth.v1.SignX509SVIDRequest.spiffe_id":          maxSPIFFEID,
		"wid.auth.v1.SignX509SVIDRequest.attributes.key":     maxAttributeKey,
		"wid.auth.v1.SignX509SVIDRequest.attributes":         maxAttributeValue,
		"wid.auth.v1.SignJWTSVIDRequest.spiffe_id":           maxSPIFFEID,
		"wid.auth.v1.SignJWTSVIDRequest.audience":            maxAudience,
		"wid.auth.v1.SignJWTSVIDRequest.audience#":           maxJWTAudiences,
		"wid.auth.v1.SignJWTSVIDRequest.attributes.key":      maxAttributeKey,
		"wid.auth.v1.SignJWTSVIDRequest.attributes":          maxAttributeValue,
		"wid.auth.v1.ExplainRequest.spiffe_id":               maxSPIFFEID,
		"wid.auth.v1.ExplainRequest.workload_attributes.key": maxAttributeKey,
		"wid.auth.v1.ExplainRequest.workload_attributes":     maxAttributeValue,
		"wid.auth.v1.CreateBotRequest.labels.key":            maxAttributeKey,
		"wid.auth.v1.CreateBotRequest.labels":                maxAttributeValue,
		"wid.auth.v1.CreateUserRequest.labels.key":           maxAttributeKey,
		"wid.auth.v1.CreateUserRequest.labels":               maxAttributeValue,
		"wid.auth.v1.CreateResourceRequest.resources":        maxResourceDoc,
		"wid.auth.v1.UpdateResourceRequest.resource":         maxResourceDoc,
		"wid.auth.v1.AuditQuery.spiffe_id":                   maxSPIFFEID,
		"wid.auth.v1.ListResourcesRequest.page_token":        maxPageToken,
		"wid.auth.v1.ImportCARequest.cert_pem":               ca.MaxUpstreamPEM,
		"wid.auth.v1.ImportCARequest.bundle_pem":             ca.MaxUpstreamPEM,
	},
}

// checkRequest is the one answer to a request over a size limit: an
// InvalidArgument naming the field and the limit, and an audited refusal
// that holds neither the field's content nor anything else the caller sent.
func (s *Server) checkRequest(ctx context.Context, method string, req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	err := requestLimits.Check(m)
	if err == nil {
		return nil
	}
	var le *reqlimit.Error
	if !errors.As(err, &le) {
		return status.Error(codes.Internal, err.Error())
	}
	c := callerFrom(ctx)
	typ := audit.TypeAccessDenied
	switch {
	case strings.HasSuffix(method, "/Join"), strings.HasSuffix(method, "/JoinChallenge"):
		typ = audit.TypeJoinDenied
	case strings.HasSuffix(method, "/Login"):
		typ = audit.TypeLoginDenied
	}
	msg := "the request is too large: " + le.Error()
	s.recordDenial(ctx, audit.Event{Type: typ, Actor: c.Actor(s), RemoteAddr: c.RemoteAddr, Reason: msg, Details: map[string]string{"method": method}})
	return status.Error(codes.InvalidArgument, msg)
}

// unaryLimits refuses a request over a size limit before its handler runs.
// It runs after authentication, so that the refusal names the caller.
func (s *Server) unaryLimits() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := s.checkRequest(ctx, info.FullMethod, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// streamLimits checks every message a stream receives.
func (s *Server) streamLimits() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &limitedStream{ServerStream: ss, s: s, method: info.FullMethod})
	}
}

type limitedStream struct {
	grpc.ServerStream
	s      *Server
	method string
}

func (ls *limitedStream) RecvMsg(m any) error {
	if err := ls.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return ls.s.checkRequest(ls.Context(), ls.method, m)
}
