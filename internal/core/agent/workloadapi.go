package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/wid-project/wid/internal/core/attest"
	"github.com/wid-project/wid/internal/core/paths"
	"github.com/wid-project/wid/internal/core/reqlimit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// listen opens the Workload API socket: its directory 0755 and the socket
// 0777, so that any local process can ask (as with SPIRE): what it gets is
// decided by attestation, not by file permissions. The directory itself
// must be this user's alone, or another user could swap the socket.
func (a *Agent) listen() (*grpc.Server, net.Listener, error) {
	return a.listenOn(a.cfg.SocketPath, 0)
}

// listenOn opens socket path as the agent's Workload API socket number i.
func (a *Agent) listenOn(path string, i int) (*grpc.Server, net.Listener, error) {
	if err := (paths.Socket{Path: path, Name: "workload socket", Flag: "--workload-socket"}).Prepare(0o755); err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, nil, fmt.Errorf("listening on the workload socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		_ = lis.Close()
		return nil, nil, fmt.Errorf("opening the workload socket to local processes: %w", err)
	}
	srv := grpc.NewServer(append(socketInterceptors(i),
		grpc.Creds(attest.Credentials()),
		grpc.ChainUnaryInterceptor(a.unaryGate),
		grpc.ChainStreamInterceptor(a.streamGate),
		grpc.MaxRecvMsgSize(1<<20),
		// A node may hold thousands of idle connections, and gRPC's
		// 32 KB read buffer for each was most of the agent's memory with
		// 2,000 never-read streams; requests are a few small frames, read
		// straight from the connection.
		grpc.ReadBufferSize(0),
	)...)
	workload.RegisterSpiffeWorkloadAPIServer(srv, &workloadAPI{a: a})
	secretv3.RegisterSecretDiscoveryServiceServer(srv, &sdsServer{a: a})
	return srv, lis, nil
}

// The Workload API requires this header on every call, so that a browser or
// an SSRF'd HTTP client cannot reach the socket by accident.
const securityHeader = "workload.spiffe.io"

// Envoy's SDS calls carry no such header (as with SPIRE): they are exempt.
// They are gRPC over HTTP/2 all the same, which a browser or a redirected
// HTTP/1 client cannot speak.
func checkHeader(ctx context.Context, fullMethod string) error {
	if strings.HasPrefix(fullMethod, sdsMethodPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request: Workload API calls must carry the metadata workload.spiffe.io: true")
	}
	return nil
}

func shortMethod(full string) string { return full[strings.LastIndexByte(full, '/')+1:] }

func (a *Agent) unaryGate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	method := shortMethod(info.FullMethod)
	resp, err := func() (any, error) {
		if err := checkHeader(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}()
	a.metrics.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	a.metrics.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	return resp, err
}

// timedStream observes the time to a stream's first response.
type timedStream struct {
	grpc.ServerStream
	start  time.Time
	method string
	m      *metrics
	sent   bool
}

func (s *timedStream) SendMsg(msg any) error {
	if !s.sent {
		s.sent = true
		s.m.latency.WithLabelValues(s.method).Observe(time.Since(s.start).Seconds())
	}
	return s.ServerStream.SendMsg(msg)
}

func (a *Agent) streamGate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method := shortMethod(info.FullMethod)
	err := checkHeader(ss.Context(), info.FullMethod)
	if err == nil {
		err = handler(srv, &timedStream{ServerStream: ss, start: time.Now(), method: method, m: a.metrics})
	}
	a.metrics.requests.WithLabelValues(method, status.Code(err).String()).Inc()
	return err
}

// caller is an attested Workload API caller.
type caller struct {
	res attest.Result
	// socket is the index of the Workload API socket it called.
	socket int
}

func (a *Agent) attestCaller(ctx context.Context) (*caller, error) {
	peer, ok := attest.PeerFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "the agent could not tell which process is calling")
	}
	res, err := a.attestor.Attest(ctx, peer)
	if err != nil {
		// The error speaks of the caller's own process only, so the caller
		// may read it; the audit gets it with what the kernel said.
		method, _ := grpc.Method(ctx)
		attrs := map[string]string{
			attest.AttrPID: strconv.FormatInt(int64(peer.PID), 10),
			attest.AttrUID: strconv.FormatUint(uint64(peer.UID), 10),
			attest.AttrGID: strconv.FormatUint(uint64(peer.GID), 10),
		}
		reason := "attesting the calling process failed: " + err.Error()
		a.attests.record("refused\x00"+attrs[attest.AttrPID]+":"+strconv.FormatUint(peer.StartTime, 10)+"\x00"+reason, shortMethod(method), attrs, nil, reason)
		return nil, status.Error(codes.PermissionDenied, reason)
	}
	return &caller{res: res, socket: socketOf(ctx)}, nil
}

// entitle returns what the caller gets under st, from a cache keyed by the
// attestation's Key (equal keys mean equal attributes, so a setuid, which
// changes the attributes, changes the key) and dropped whenever the state
// changes. The first time a process instance gets a result it is recorded
// for the audit log.
func (a *Agent) entitle(st *state, c *caller, method string) *entitlements {
	a.entMu.Lock()
	if a.entGen != st {
		a.entGen = st
		clear(a.ents)
	}
	config, prefix := a.configFor(c.socket)
	e := a.ents[prefix+c.res.Key]
	a.entMu.Unlock()
	if e == nil {
		e = entitle(st, config, c.res.Attributes)
		e.attestReasons = c.res.Reasons
		a.entMu.Lock()
		if a.entGen == st {
			if len(a.ents) >= 10_000 {
				clear(a.ents)
			}
			a.ents[prefix+c.res.Key] = e
		}
		a.entMu.Unlock()
	}
	ids := e.ids()
	// An entitled caller's record still says which attestors failed.
	reason := strings.Join(e.attestReasons, "; ")
	if len(ids) == 0 {
		reason = e.reason()
	}
	a.attests.record(c.res.Key+"\x00"+strings.Join(ids, ","), method, c.res.Attributes, ids, reason)
	return e
}

// errNoIdentity is the answer for a caller entitled to nothing. It says no
// more: the reasons name every identity and the exact value each rule
// wants, a recipe for any local process to pose as a workload. They go to
// the agent's log and the audit, and widctl explain gives them to an admin.
var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued: this process matches no workload identity (the agent's log and the audit log say why)")

// servingError turns the per-SVID errors of a response that ended up empty
// into one status: unreachable auth is Unavailable (clients retry), refusal
// is PermissionDenied.
func servingError(errs []error) error {
	var reasons []string
	unavailable := false
	for _, err := range errs {
		if err == nil {
			continue
		}
		var u *unavailableError
		if errors.As(err, &u) || errors.Is(err, errNoState) {
			unavailable = true
		}
		if !slices.Contains(reasons, err.Error()) {
			reasons = append(reasons, err.Error())
		}
	}
	msg := "no identity issued: " + strings.Join(reasons, "; ")
	if unavailable {
		return status.Error(codes.Unavailable, msg)
	}
	return status.Error(codes.PermissionDenied, msg)
}

func stateError(err error) error {
	if errors.Is(err, errNoState) {
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.FromContextError(err).Err()
}

type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	a *Agent
}

// follow runs build now and again after every change of state or SVIDs,
// sending each response that differs from the last. build returns the
// entitlements it holds so the cache keeps them fresh while watched.
func (a *Agent) follow(ctx context.Context, kind, method string, build func(*state) (proto.Message, []entitlement, error), send func(proto.Message) error) error {
	if _, err := a.waitState(ctx); err != nil {
		return stateError(err)
	}
	var last proto.Message
	var held []entitlement
	defer func() { a.cache.watch(kind, held, nil, -1) }()
	for {
		stateCh, svidCh := a.stateChanged.wait(), a.cache.changed.wait()
		msg, ents, err := build(a.st.Load())
		a.cache.watch(kind, ents, nil, +1)
		a.cache.watch(kind, held, nil, -1)
		held = ents
		if err != nil {
			return err
		}
		if last == nil || !proto.Equal(msg, last) {
			if err := a.sendBounded(ctx, method, func() error { return send(msg) }); err != nil {
				return err
			}
			last = msg
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stateCh:
		case <-svidCh:
		}
	}
}

// serve picks the caller's entitlements (one SPIFFE ID if asked for) with
// unique hints, and gets their SVIDs of kind.
func (a *Agent) serve(ctx context.Context, c *caller, st *state, kind, method, only string, audiences []string) ([]*svid, []entitlement, error) {
	e := a.entitle(st, c, method)
	if len(e.list) == 0 {
		return nil, nil, errNoIdentity
	}
	ents, _ := uniqueHints(e.list)
	if only != "" {
		ents = slices.DeleteFunc(slices.Clone(ents), func(en entitlement) bool { return en.id.String() != only })
		if len(ents) == 0 {
			return nil, nil, status.Errorf(codes.PermissionDenied, "no identity issued: this process is not entitled to %s", only)
		}
	}
	svids, errs := a.cache.get(ctx, kind, ents, audiences, c.res.Attributes)
	var got []*svid
	for _, s := range svids {
		if s != nil {
			got = append(got, s)
		}
	}
	if len(got) == 0 {
		if ctx.Err() != nil {
			return nil, ents, status.FromContextError(ctx.Err()).Err()
		}
		return nil, ents, servingError(errs)
	}
	return got, ents, nil
}

func (w *workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	a := w.a
	ctx := stream.Context()
	c, err := a.attestCaller(ctx)
	if err != nil {
		return err
	}
	return a.follow(ctx, authv1.SVIDTypeX509, "FetchX509SVID", func(st *state) (proto.Message, []entitlement, error) {
		svids, ents, err := a.serve(ctx, c, st, authv1.SVIDTypeX509, "FetchX509SVID", "", nil)
		if err != nil {
			return nil, ents, err
		}
		resp := &workload.X509SVIDResponse{Svids: make([]*workload.X509SVID, len(svids))}
		for i, s := range svids {
			resp.Svids[i] = &workload.X509SVID{SpiffeId: s.spiffeID, X509Svid: s.chainDER, X509SvidKey: s.keyDER, Bundle: st.x509BundleDER, Hint: s.hint}
		}
		if fed := st.federatedFor(ents); len(fed) > 0 {
			resp.FederatedBundles = make(map[string][]byte, len(fed))
			for _, f := range fed {
				resp.FederatedBundles[f.td.IDString()] = f.x509BundleDER
			}
		}
		return resp, ents, nil
	}, func(m proto.Message) error { return stream.Send(m.(*workload.X509SVIDResponse)) })
}

func (w *workloadAPI) FetchWITSVID(req *workload.WITSVIDRequest, stream workload.SpiffeWorkloadAPI_FetchWITSVIDServer) error {
	a := w.a
	ctx := stream.Context()
	c, err := a.attestCaller(ctx)
	if err != nil {
		return err
	}
	return a.follow(ctx, authv1.SVIDTypeWIT, "FetchWITSVID", func(st *state) (proto.Message, []entitlement, error) {
		svids, ents, err := a.serve(ctx, c, st, authv1.SVIDTypeWIT, "FetchWITSVID", req.GetSpiffeId(), nil)
		if err != nil {
			return nil, ents, err
		}
		resp := &workload.WITSVIDResponse{Svids: make([]*workload.WITSVID, len(svids))}
		for i, s := range svids {
			resp.Svids[i] = &workload.WITSVID{SpiffeId: s.spiffeID, WitSvid: s.token, WitSvidKey: s.keyJWK, Hint: s.hint}
		}
		return resp, ents, nil
	}, func(m proto.Message) error { return stream.Send(m.(*workload.WITSVIDResponse)) })
}

// normalizeAudiences sorts and dedupes: the same audiences in another order
// are the same JWT-SVID.
func normalizeAudiences(aud []string) []string {
	out := slices.Clone(aud)
	slices.Sort(out)
	return slices.Compact(out)
}

// workloadLimits bound what any local process may send the Workload API:
// JWT audiences reach the auth service, its audit log and every token.
var workloadLimits = &reqlimit.Limits{
	String: 4096, Bytes: 16 << 10, Items: 64,
	Fields: map[string]int{
		"JWTSVIDRequest.audience":         1024,
		"JWTSVIDRequest.audience#":        32,
		"JWTSVIDRequest.spiffe_id":        2048,
		"ValidateJWTSVIDRequest.audience": 1024,
		"ValidateJWTSVIDRequest.svid":     64 << 10,
	},
}

// checkWorkloadRequest answers a request over a size limit with one
// InvalidArgument naming the field and the limit.
func checkWorkloadRequest(req proto.Message) error {
	if err := workloadLimits.Check(req); err != nil {
		return status.Error(codes.InvalidArgument, "the request is too large: "+err.Error())
	}
	return nil
}

func (w *workloadAPI) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	a := w.a
	if err := checkWorkloadRequest(req); err != nil {
		return nil, err
	}
	auds := normalizeAudiences(req.GetAudience())
	if len(auds) == 0 || slices.Contains(auds, "") {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified: a JWT-SVID is minted for the audiences that will validate it")
	}
	c, err := a.attestCaller(ctx)
	if err != nil {
		return nil, err
	}
	st, err := a.waitState(ctx)
	if err != nil {
		return nil, stateError(err)
	}
	svids, _, err := a.serve(ctx, c, st, authv1.SVIDTypeJWT, "FetchJWTSVID", req.GetSpiffeId(), auds)
	if err != nil {
		return nil, err
	}
	resp := &workload.JWTSVIDResponse{Svids: make([]*workload.JWTSVID, len(svids))}
	for i, s := range svids {
		resp.Svids[i] = &workload.JWTSVID{SpiffeId: s.spiffeID, Svid: s.token, Hint: s.hint}
	}
	return resp, nil
}

// verifier checks that a caller may read bundles and validate tokens:
// entitled to some identity, unless unauthenticated verifiers are allowed.
// It returns the federated bundles the caller's identities federate with
// (none for an unauthenticated verifier).
func (a *Agent) verifier(ctx context.Context, st *state, method string) ([]*federatedBundle, error) {
	if a.cfg.AllowUnauthenticatedVerifiers {
		return nil, nil
	}
	c, err := a.attestCaller(ctx)
	if err != nil {
		return nil, err
	}
	e := a.entitle(st, c, method)
	if len(e.list) == 0 {
		return nil, errNoIdentity
	}
	return st.federatedFor(e.list), nil
}

// followBundle sends the bundle response built from each state, with the
// federated bundles the caller's identities federate with, whenever it
// changes.
func (a *Agent) followBundle(ctx context.Context, method string, build func(*state, []*federatedBundle) proto.Message, send func(proto.Message) error) error {
	st, err := a.waitState(ctx)
	if err != nil {
		return stateError(err)
	}
	// An unauthenticated verifier gets this trust domain's bundle only:
	// which foreign ones apply depends on who it is.
	var c *caller
	if !a.cfg.AllowUnauthenticatedVerifiers {
		if c, err = a.attestCaller(ctx); err != nil {
			return err
		}
		if e := a.entitle(st, c, method); len(e.list) == 0 {
			return errNoIdentity
		}
	}
	var last proto.Message
	for {
		ch := a.stateChanged.wait()
		st := a.st.Load()
		var fed []*federatedBundle
		if c != nil {
			fed = st.federatedFor(a.entitle(st, c, method).list)
		}
		msg := build(st, fed)
		if last == nil || !proto.Equal(last, msg) {
			if err := a.sendBounded(ctx, method, func() error { return send(msg) }); err != nil {
				return err
			}
			last = msg
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}

func (w *workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream workload.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return w.a.followBundle(stream.Context(), "FetchX509Bundles", func(st *state, fed []*federatedBundle) proto.Message {
		resp := &workload.X509BundlesResponse{Bundles: map[string][]byte{st.td.IDString(): st.x509BundleDER}}
		for _, f := range fed {
			resp.Bundles[f.td.IDString()] = f.x509BundleDER
		}
		return resp
	}, func(m proto.Message) error { return stream.Send(m.(*workload.X509BundlesResponse)) })
}

func (w *workloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	return w.a.followBundle(stream.Context(), "FetchJWTBundles", func(st *state, fed []*federatedBundle) proto.Message {
		resp := &workload.JWTBundlesResponse{Bundles: map[string][]byte{st.td.IDString(): st.jwtJWKS}}
		for _, f := range fed {
			if len(f.jwtJWKS) > 0 {
				resp.Bundles[f.td.IDString()] = f.jwtJWKS
			}
		}
		return resp
	}, func(m proto.Message) error { return stream.Send(m.(*workload.JWTBundlesResponse)) })
}

func (w *workloadAPI) FetchWITBundles(_ *workload.WITBundlesRequest, stream workload.SpiffeWorkloadAPI_FetchWITBundlesServer) error {
	return w.a.followBundle(stream.Context(), "FetchWITBundles", func(st *state, _ []*federatedBundle) proto.Message {
		return &workload.WITBundlesResponse{Bundles: map[string]string{st.td.IDString(): string(st.witJWKS)}}
	}, func(m proto.Message) error { return stream.Send(m.(*workload.WITBundlesResponse)) })
}

func (w *workloadAPI) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	a := w.a
	if err := checkWorkloadRequest(req); err != nil {
		return nil, err
	}
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified: give the audience the token must be for")
	}
	if req.GetSvid() == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified: give the JWT-SVID to validate")
	}
	st, err := a.waitState(ctx)
	if err != nil {
		return nil, stateError(err)
	}
	fed, err := a.verifier(ctx, st, "ValidateJWTSVID")
	if err != nil {
		return nil, err
	}
	// JWT-SVIDs of the trust domains the caller federates with validate too.
	bundles := jwtbundle.NewSet(st.jwtBundle)
	for _, f := range fed {
		bundles.Add(f.jwtBundle)
	}
	token, err := jwtsvid.ParseAndValidate(req.GetSvid(), bundles, []string{req.GetAudience()})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID is not valid: %v", err)
	}
	if l := st.lockOf(token.ID, time.Now()); l != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID is not valid: %s", lockReason(token.ID, l))
	}
	iat, ok := issuedAt(token.Claims)
	if why := st.revokedJWT(token.ID, iat, ok, time.Now()); why != "" {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID is not valid: %s", why)
	}
	claims, err := structpb.NewStruct(jsonClaims(token.Claims))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the token's claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: token.ID.String(), Claims: claims}, nil
}

// jsonClaims turns go-jose's decoded claims into what structpb accepts.
func jsonClaims(in map[string]any) map[string]any {
	out := make(map[string]any, len(in))
	for k, v := range in {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return jsonClaims(t)
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = jsonValue(x)
		}
		return out
	case []string:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = x
		}
		return out
	case int64:
		return float64(t)
	case int:
		return float64(t)
	default:
		return v
	}
}
