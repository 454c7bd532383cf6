package agentcmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"syscall"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"google.golang.org/grpc/grpclog"
)

// Log formats of --log-format.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// openLog returns widagent's logger: slog's text or JSON handler at level,
// writing to errOut, or to the file path when it is set. close releases
// the file.
func openLog(format, level, path string, errOut io.Writer) (logger *slog.Logger, close func() error, err error) {
	lvl, err := parseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	w, close := errOut, func() error { return nil }
	if path != "" {
		f, err := openLogFile(path)
		if err != nil {
			return nil, nil, err
		}
		w, close = f, f.Close
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "", LogFormatText:
		h = slog.NewTextHandler(w, opts)
	case LogFormatJSON:
		h = slog.NewJSONHandler(w, opts)
	default:
		_ = close()
		return nil, nil, cmdutil.InputError(fmt.Errorf("--log-format %q is unknown: use %s or %s", format, LogFormatText, LogFormatJSON))
	}
	return slog.New(h), close, nil
}

// openLogFile opens path for appending, creating it 0600: logs name
// tokens, bots and SPIFFE IDs, which are no business of other local users.
// An existing file others can read is refused rather than chmod'ed behind
// the operator's back. A symlink is not followed and a file of another
// user is refused: either would let whoever planted it choose (or read)
// what a root agent writes to.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("opening the log file %s: its directory does not exist: create it (mode 0700) or name another file with --log-file", path)
		}
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("the log file %s is a symbolic link, which is not followed: name the file itself with --log-file", path)
		}
		return nil, fmt.Errorf("opening the log file %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening the log file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("the log file %s is not a regular file: name a file with --log-file", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		f.Close()
		return nil, fmt.Errorf("the log file %s belongs to uid %d, not to uid %d running widagent: remove it or name a file of your own with --log-file", path, sys.Uid, os.Geteuid())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		f.Close()
		return nil, fmt.Errorf("the log file %s has mode %04o, so other users can read it: run chmod 600 %s, or name a new file", path, perm, path)
	}
	return f, nil
}

// routeProcessLogs sends what the standard library's log package and gRPC
// write to logger too, so that with --log-format json every line the
// process logs is a JSON object. Only for a process's one start: both are
// process-wide settings.
func routeProcessLogs(logger *slog.Logger) {
	slog.SetDefault(logger)
	warn := slog.NewLogLogger(logger.Handler(), slog.LevelWarn).Writer()
	errW := slog.NewLogLogger(logger.Handler(), slog.LevelError).Writer()
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, warn, errW))
}
