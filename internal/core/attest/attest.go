// Package attest tells the agent which process is calling its Workload API
// and derives the workload attributes that identity rules match on:
// workload.unix.* from /proc, and, from where the caller's cgroups place it,
// workload.kubernetes.* (the kubelet), workload.docker.* (the Docker Engine
// API) and workload.systemd.* (systemd over D-Bus). A Chain runs them.
//
// The kernel's word (SO_PEERCRED, taken when the connection is accepted) is
// the root of everything here; /proc only adds detail to that process. The
// package must never attribute one process's details to another: when the
// process that connected exits, has its pid reused, executes another binary
// or changes its uid during attestation, Attest fails with ErrProcessGone
// rather than return a mix.
package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// Attribute names set by the unix attestor.
const (
	AttrPID               = "workload.unix.pid"
	AttrUID               = "workload.unix.uid"
	AttrGID               = "workload.unix.gid"
	AttrPath              = "workload.unix.path"
	AttrSHA256            = "workload.unix.sha256"
	AttrUser              = "workload.unix.user"
	AttrGroup             = "workload.unix.group"
	AttrSupplementaryGIDs = "workload.unix.supplementary_gids"
	// AttrUnixAttested is "true" on every attestation the unix attestor
	// made, so a rule can insist that it ran.
	AttrUnixAttested = "workload.unix.attested"
)

// Defaults of UnixOptions.
const (
	DefaultProcRoot     = "/proc"
	DefaultMaxHashBytes = 512 << 20
)

// Cache bounds. Names expire so that a renamed user shows up within a minute.
const (
	hashCacheSize = 4096
	nameCacheSize = 1024
	nameTTL       = time.Minute
	nameErrTTL    = 5 * time.Second
)

// ErrProcessGone means the process that connected is no longer there as it
// connected: it exited, its pid now belongs to another process, it executed
// another binary during attestation, or it runs under another uid or gid.
// Such a caller gets no attributes.
var ErrProcessGone = errors.New("the calling process is gone")

// goneError says what happened to the process; errors.Is(err, ErrProcessGone) holds.
type goneError struct{ msg string }

func (e *goneError) Error() string { return e.msg }
func (e *goneError) Unwrap() error { return ErrProcessGone }

func gone(format string, args ...any) error {
	return &goneError{msg: fmt.Sprintf(format, args...)}
}

// Peer is the process at the other end of a Workload API connection, as the
// kernel reported it when the connection was accepted.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
	// StartTime is the process start time from /proc/<pid>/stat (field 22,
	// clock ticks since boot), read during the handshake; 0 where unknown
	// (non-linux). It tells the connecting process from a later one given
	// the same pid.
	StartTime uint64
	// Exe is the executable the process ran when its connection was
	// accepted; zero where unknown (non-linux, or a process this server may
	// not inspect). Attestation refuses a process that runs another one
	// now: it may have executed a trusted binary after handing the
	// connection to a child.
	Exe ExeID

	// exeHidden: the handshake was not allowed to inspect the executable,
	// so no path or sha256 can be vouched for as the connecting program's.
	exeHidden bool
	// memo is the connection's last attestation (Credentials sets it).
	memo *connMemo
}

// ExeID names an executable file by device and inode: a path can be
// renamed or replaced, these cannot change under a running program.
type ExeID struct {
	Dev uint64
	Ino uint64
}

// Result is what Attest found.
type Result struct {
	Attributes map[string]string
	// Key identifies the attested process instance and binary: pid, start
	// time, and the executable's dev/inode/mtime, followed by a digest of
	// the attributes. Two attestations with equal Keys saw the same process
	// running the same binary, with equal Attributes (the agent uses it to
	// avoid recording the same attestation twice).
	Key string
	// Reasons say why attestors added nothing (a kubelet that did not
	// answer, a caller in no container), for the attestation record.
	Reasons []string
}

// UnixOptions configures NewUnix.
type UnixOptions struct {
	// ProcRoot is where procfs is mounted; "" means /proc. Tests point it
	// at a fake tree.
	ProcRoot string
	// Logger gets debug records only; nil discards them.
	Logger *slog.Logger
	// MaxHashBytes skips hashing executables larger than this (the sha256
	// attribute is then omitted); 0 means DefaultMaxHashBytes, a negative
	// value never hashes.
	MaxHashBytes int64
}

// Unix attests processes from /proc. Safe for concurrent use.
//
// Every Workload API call attests, so the cost of a call is a handful of
// small /proc reads: executable hashes are cached by (device, inode, mtime,
// size, ctime) of the binary, so a replaced binary is hashed again, and user
// and group names are cached for a minute.
type Unix struct {
	procRoot string
	log      *slog.Logger
	maxHash  int64
	hashes   *hashCache
	users    *nameCache
	groups   *nameCache

	// midway, when set by tests, runs after the attributes were read and
	// before the final checks.
	midway func()
}

// NewUnix returns a unix attestor.
func NewUnix(opts UnixOptions) *Unix {
	if opts.ProcRoot == "" {
		opts.ProcRoot = DefaultProcRoot
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxHashBytes == 0 {
		opts.MaxHashBytes = DefaultMaxHashBytes
	}
	return &Unix{
		procRoot: opts.ProcRoot,
		log:      opts.Logger,
		maxHash:  opts.MaxHashBytes,
		hashes:   newHashCache(hashCacheSize),
		users:    newNameCache(nameCacheSize, lookupUser),
		groups:   newNameCache(nameCacheSize, lookupGroup),
	}
}

// Attest returns the workload attributes of peer:
//
//   - workload.unix.pid, workload.unix.uid, workload.unix.gid: decimal, as
//     the kernel reported them at connect (uid and gid are the effective ones,
//     and must still be the process's effective uid and gid);
//   - workload.unix.path: the absolute path of the executable, omitted when
//     the binary was deleted or replaced since the process started;
//   - workload.unix.sha256: hex sha256 of the executable the process runs,
//     omitted with the path, or when the binary is larger than MaxHashBytes;
//   - workload.unix.user, workload.unix.group: names of uid and gid, omitted
//     when unknown;
//   - workload.unix.supplementary_gids: comma-separated, sorted, omitted
//     when the process has none.
//
// It fails with an error wrapping ErrProcessGone if the process exited, its
// pid now belongs to another process (checked against peer.StartTime when
// it is non-zero), it executed another binary since it connected (checked
// against peer.Exe when it is non-zero) or during attestation, or its
// effective uid or gid is no longer peer's.
func (u *Unix) Attest(ctx context.Context, peer Peer) (Result, error) {
	return u.attest(ctx, peer)
}

// attestKey builds Result.Key. The digest covers every attribute value in a
// fixed order, so equal keys mean equal attributes even when a user was
// renamed or the binary moved while the process kept running.
func attestKey(pid int32, start uint64, exe fileKey, attrs map[string]string) string {
	h := sha256.New()
	for _, name := range attrOrder {
		v, ok := attrs[name]
		if !ok {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	b := make([]byte, 0, 128)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, start, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, exe.dev, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, exe.ino, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, exe.mtime, 10)
	b = append(b, ':')
	b = hex.AppendEncode(b, h.Sum(sum[:0])[:16])
	return string(b)
}

var attrOrder = [...]string{AttrPID, AttrUID, AttrGID, AttrPath, AttrSHA256, AttrUser, AttrGroup, AttrSupplementaryGIDs}
