package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/wid-project/wid/internal/advice"
	"github.com/wid-project/wid/internal/core/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes of widctl. Scripts may rely on them; they are listed in
// `widctl --help`.
const (
	// ExitOK: the command did what was asked.
	ExitOK = 0
	// ExitError: the command failed, or its answer is "no" (explain denied,
	// audit verification found problems).
	ExitError = 1
	// ExitBadInput: a flag, argument, file or config value is wrong, or the
	// auth service refused the request's content (invalid, already exists,
	// precondition not met).
	ExitBadInput = 2
	// ExitAuth: the caller could not be authenticated or is not allowed.
	ExitAuth = 3
	// ExitNotFound: the named resource does not exist.
	ExitNotFound = 4
	// ExitUnavailable: the auth service could not be reached in time.
	ExitUnavailable = 5
	// ExitInterrupted: the user pressed Ctrl-C.
	ExitInterrupted = 130
)

// ExitCodesHelp documents the exit codes for the root command's help.
const ExitCodesHelp = `Exit codes:
  0    success
  1    failure, or a "no" answer (explain denied, audit verify found problems)
  2    bad input: flags, arguments, files, config, or a request the auth service
       found invalid (malformed, already exists, still in use)
  3    not authenticated, or refused: your roles do not allow it
  4    not found
  5    the auth service cannot be reached
  130  interrupted`

// Error is an error that knows what to tell the user and how widctl exits.
type Error struct {
	// Code is the exit code.
	Code int
	// Message is one sentence for people. Empty means the command already
	// said everything (for example the problems audit verify found).
	Message string
	// Err is the cause, shown with WID_DEBUG=1.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Err != nil:
		return e.Err.Error()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

func (e *Error) Unwrap() error { return e.Err }

// InputError marks err as bad input (exit 2); its text is the sentence shown.
func InputError(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: ExitBadInput, Message: sentence(err), Err: err}
}

// sentence is err's text followed by the next step its type names (a
// login to mend, an auth service to name).
func sentence(err error) string { return err.Error() + advice.Local(err) }

// InputErrorf is InputError with a formatted sentence.
func InputErrorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: ExitBadInput, Message: err.Error(), Err: err}
}

// SilentError ends widctl with code after the command printed its own account.
func SilentError(code int) error { return &Error{Code: code} }

// Report is what widctl tells the user about an error.
type Report struct {
	// Message is one sentence; empty when nothing is to be printed.
	Message string
	// Code is the exit code.
	Code int
	// Detail is the whole chain and the gRPC code, for WID_DEBUG=1.
	Detail string
}

// Explain maps err to one sentence and an exit code. target names the auth
// service (the admin socket or host:port) for errors about reaching it. This
// is the only place that turns errors into exit codes.
func Explain(err error, target string) Report {
	if err == nil {
		return Report{Code: ExitOK}
	}
	r := Report{Code: ExitError, Message: sentence(err), Detail: err.Error()}
	if st, ok := grpcStatus(err); ok {
		r.Detail = fmt.Sprintf("%v (gRPC code %s)", err, st.Code())
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Message == "" && e.Err == nil {
			// The command already said everything.
			return Report{Code: e.Code}
		}
		r.Code = e.Code
		r.Message = e.Message
		if e.Message == "" && e.Err != nil {
			r.Message = explainStatus(e.Err, target).Message
		}
		return r
	}
	if errors.Is(err, context.Canceled) {
		return Report{Code: ExitInterrupted, Detail: r.Detail}
	}
	got := explainStatus(err, target)
	r.Code, r.Message = got.Code, got.Message
	return r
}

// explainStatus reads a gRPC status in err. The auth service writes its
// status messages as sentences for people, so those are shown as they are,
// followed by the next step its details name (see advice); only what the
// gRPC library itself says (about connections) is rephrased.
func explainStatus(err error, target string) Report {
	st, ok := grpcStatus(err)
	if !ok {
		return Report{Code: ExitError, Message: sentence(err)}
	}
	// The auth service types the next step; widctl words it.
	msg := advice.Status(st)
	switch st.Code() {
	case codes.OK:
		return Report{Code: ExitOK}
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.AlreadyExists:
		return Report{Code: ExitBadInput, Message: msg}
	case codes.Unauthenticated, codes.PermissionDenied:
		return Report{Code: ExitAuth, Message: msg}
	case codes.NotFound:
		return Report{Code: ExitNotFound, Message: msg}
	case codes.Canceled:
		return Report{Code: ExitInterrupted}
	case codes.Unavailable, codes.DeadlineExceeded:
		if _, _, ok := client.ServerAnswer(err); ok {
			// The auth service answered, and said why it could not serve
			// (a full disk, a stop under way): that, not "cannot reach".
			return Report{Code: ExitUnavailable, Message: msg}
		}
		return unreachable(msg, target)
	}
	return Report{Code: ExitError, Message: msg}
}

func grpcStatus(err error) (*status.Status, bool) {
	// errors.As keeps the status's own message: status.FromError would
	// replace it with the whole wrapped chain.
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil, false
	}
	st := se.GRPCStatus()
	return st, st != nil
}

// unreachable explains why the auth service could not be reached: a TLS
// handshake that failed is about trust, not about the service being down.
func unreachable(msg, target string) Report {
	where := "the auth service"
	if target != "" {
		where += " at " + target
	}
	if _, detail, ok := strings.Cut(msg, "authentication handshake failed: "); ok {
		detail = strings.TrimRight(detail, `"`)
		if strings.HasPrefix(detail, "the auth service") {
			// Our own verifier's sentence (wrong CA pin, foreign CA).
			return Report{Code: ExitAuth, Message: detail}
		}
		return Report{Code: ExitAuth, Message: fmt.Sprintf("the TLS handshake with %s failed (%s): check --ca-pin and --identity", where, detail)}
	}
	if strings.Contains(msg, "connect: permission denied") {
		return Report{Code: ExitAuth, Message: fmt.Sprintf("cannot open the admin socket %s: permission denied: run widctl as the user that runs widagent, or as root", target)}
	}
	return Report{Code: ExitUnavailable, Message: fmt.Sprintf("cannot reach %s: is widagent running?", where)}
}

// DebugEnv shows the whole error chain and the gRPC code when set to 1.
const DebugEnv = "WID_DEBUG"

// HandleError prints err on stderr as "error: <sentence>" (with WID_DEBUG=1
// or --debug, followed by the chain) and returns the exit code.
func HandleError(f *Factory, err error) int {
	if err == nil {
		return ExitOK
	}
	var target string
	debug := os.Getenv(DebugEnv) == "1"
	if cfg, cerr := f.Config(); cerr == nil {
		target = cfg.Target()
		debug = debug || cfg.Debug
	}
	r := Explain(err, target)
	if r.Message != "" {
		fmt.Fprintf(f.IOStreams.ErrOut, "error: %s\n", r.Message)
	}
	if debug && r.Detail != "" {
		fmt.Fprintf(f.IOStreams.ErrOut, "debug: %s\n", r.Detail)
	}
	return r.Code
}
