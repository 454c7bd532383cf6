package auth

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/wid-project/wid/internal/core/audit"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Login admission. Every login attempt costs one argon2id computation
// (64 MiB and tens of milliseconds of CPU), and anyone on the network may
// try one: without a bound, a hundred parallel attempts take gigabytes and
// starve the Workload API and every other call of the process. So at most
// maxConcurrentHashes attempts hash at once and the rest are refused at
// once, and each source and each user name gets a rate.
const (
	// loginSourceRate and loginSourceBurst bound attempts per source
	// address: a person typing never comes near them.
	loginSourceRate  = rate.Limit(2)
	loginSourceBurst = 20
	// loginUserRate and loginUserBurst bound attempts per user name, from
	// anywhere. They are looser than the lockouts (see recordLoginFailure)
	// and only meter the CPU that guesses at one name can take.
	loginUserRate  = rate.Limit(2)
	loginUserBurst = 20
	// loginRetryAfter is the retry hint of a refusal for load.
	loginRetryAfter = 2 * time.Second
	// maxLoginLimiters bounds the sources and names followed; past it the
	// table starts over.
	maxLoginLimiters = 10000
)

// maxConcurrentHashes is half an argon2id computation per CPU: each runs
// four lanes in parallel, so this already keeps every CPU busy, and more
// would only queue inside the scheduler holding 64 MiB each while the
// Workload API waits for a CPU (measured: a fetch during 100 parallel
// logins took 1.2-1.7 s with one hash per CPU, about 1 s with this, on a
// loaded 2-CPU machine).
func maxConcurrentHashes() int { return min(max(runtime.NumCPU()/2, 1), 8) }

// loginLimiter admits login attempts.
type loginLimiter struct {
	now    func() time.Time
	hashes chan struct{}

	mu      sync.Mutex
	sources map[string]*rate.Limiter
	users   map[string]*rate.Limiter
	// sourceRate and userRate are the rates above; tests raise them.
	sourceRate, userRate   rate.Limit
	sourceBurst, userBurst int
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{
		now: now, hashes: make(chan struct{}, maxConcurrentHashes()),
		sources: map[string]*rate.Limiter{}, users: map[string]*rate.Limiter{},
		sourceRate: loginSourceRate, sourceBurst: loginSourceBurst, userRate: loginUserRate, userBurst: loginUserBurst,
	}
}

func (l *loginLimiter) limiter(m map[string]*rate.Limiter, key string, r rate.Limit, burst int) *rate.Limiter {
	lim, ok := m[key]
	if !ok {
		if len(m) >= maxLoginLimiters {
			clear(m)
		}
		lim = rate.NewLimiter(r, burst)
		m[key] = lim
	}
	return lim
}

// admit takes a hashing slot for an attempt at user from source, or says
// why not ("" when admitted). release gives the slot back.
func (l *loginLimiter) admit(source, user string) (release func(), why string) {
	l.mu.Lock()
	now := l.now()
	okSource := l.limiter(l.sources, source, l.sourceRate, l.sourceBurst).AllowN(now, 1)
	okUser := okSource && l.limiter(l.users, user, l.userRate, l.userBurst).AllowN(now, 1)
	l.mu.Unlock()
	switch {
	case !okSource:
		return nil, "too many login attempts from this address"
	case !okUser:
		return nil, "too many login attempts for this user"
	}
	select {
	case l.hashes <- struct{}{}:
		return func() { <-l.hashes }, ""
	default:
		return nil, "too many logins being checked at once"
	}
}

// loginSource names where an attempt comes from, for rate limits and
// lockouts: the address without the port, and for IPv6 its /64, which one
// machine usually holds whole.
func loginSource(remote string) string {
	if strings.HasPrefix(remote, "uid:") {
		return remote // the admin socket
	}
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// admitLogin admits an attempt or answers ResourceExhausted with a retry
// hint, audited like every refused login.
func (s *Server) admitLogin(ctx context.Context, user, source string) (func(), error) {
	release, why := s.logins.admit(source, user)
	if why == "" {
		return release, nil
	}
	c := callerFrom(ctx)
	s.recordDenial(ctx, audit.Event{Type: audit.TypeLoginDenied, Actor: user, RemoteAddr: c.RemoteAddr, Reason: why + " (not checked)"})
	st := status.New(codes.ResourceExhausted, "login refused: "+why+": try again in a few seconds")
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(loginRetryAfter)}); err == nil {
		st = d
	}
	return nil, st.Err()
}
