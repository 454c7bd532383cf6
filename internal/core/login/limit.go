package login

import (
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Login admission. Every login attempt costs one argon2id computation
// (64 MiB and tens of milliseconds of CPU), and anyone on the network may
// try one: without a bound, a hundred parallel attempts take gigabytes and
// starve the Workload API and every other call of the process. So at most
// MaxConcurrentHashes attempts hash at once and the rest are refused at
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
	// RetryAfter is the retry hint of a refusal for load.
	RetryAfter = 2 * time.Second
	// maxLoginLimiters bounds the sources and names followed; past it the
	// table starts over.
	maxLoginLimiters = 10000
)

// MaxConcurrentHashes is half an argon2id computation per CPU: each runs
// four lanes in parallel, so this already keeps every CPU busy, and more
// would only queue inside the scheduler holding 64 MiB each while the
// Workload API waits for a CPU (measured: a fetch during 100 parallel
// logins took 1.2-1.7 s with one hash per CPU, about 1 s with this, on a
// loaded 2-CPU machine).
func MaxConcurrentHashes() int { return min(max(runtime.NumCPU()/2, 1), 8) }

// Limiter admits login attempts.
type Limiter struct {
	now    func() time.Time
	hashes chan struct{}

	mu      sync.Mutex
	sources map[string]*rate.Limiter
	users   map[string]*rate.Limiter
	// sourceRate and userRate are the rates above; tests raise them.
	sourceRate, userRate   rate.Limit
	sourceBurst, userBurst int
}

// NewLimiter returns a Limiter with the bounds above.
func NewLimiter(now func() time.Time) *Limiter {
	l := NewLimiterWith(now, MaxConcurrentHashes(), loginSourceRate, loginSourceBurst)
	l.userRate, l.userBurst = loginUserRate, loginUserBurst
	return l
}

// NewLimiterWith returns a Limiter that lets concurrent attempts hash at
// once, and each source and each user name make perSecond attempts with
// bursts of burst. Tests raise the bounds with it.
func NewLimiterWith(now func() time.Time, concurrent int, perSecond rate.Limit, burst int) *Limiter {
	return &Limiter{
		now: now, hashes: make(chan struct{}, concurrent),
		sources: map[string]*rate.Limiter{}, users: map[string]*rate.Limiter{},
		sourceRate: perSecond, sourceBurst: burst, userRate: perSecond, userBurst: burst,
	}
}

func (l *Limiter) limiter(m map[string]*rate.Limiter, key string, r rate.Limit, burst int) *rate.Limiter {
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

// Admit takes a hashing slot for an attempt at user from source, or says
// why not ("" when admitted). release gives the slot back.
func (l *Limiter) Admit(source, user string) (release func(), why string) {
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

// Source names where an attempt comes from, for rate limits and
// lockouts: the address without the port, and for IPv6 its /64, which one
// machine usually holds whole.
func Source(remote string) string {
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
