package token

import (
	"fmt"
	"io"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/resource"
)

// Join is what `widctl bot create` and `widctl token create` print: a join token,
// shown once, and the command that joins an agent with it. Its JSON and YAML
// field names are stable.
type Join struct {
	Bot         string    `json:"bot" yaml:"bot"`
	Roles       []string  `json:"roles,omitempty" yaml:"roles,omitempty"`
	Token       string    `json:"token" yaml:"token"`
	TokenName   string    `json:"token_name" yaml:"token_name"`
	Uses        int       `json:"uses" yaml:"uses"`
	Expires     time.Time `json:"expires" yaml:"expires"`
	JoinCommand string    `json:"join_command" yaml:"join_command"`
}

// NewJoin assembles a Join from the auth service's answers.
func NewJoin(ping *authv1.PingResponse, secret string, tokenDoc []byte) (*Join, error) {
	r, err := cmdutil.DecodeResource(tokenDoc)
	if err != nil {
		return nil, err
	}
	t, ok := r.(*resource.JoinToken)
	if !ok {
		return nil, fmt.Errorf("the auth service answered with a %s instead of a join token", r.GetKind())
	}
	return &Join{
		Bot:         t.Spec.Bot,
		Token:       secret,
		TokenName:   t.Metadata.Name,
		Uses:        t.Spec.Uses,
		Expires:     t.Spec.Expires,
		JoinCommand: JoinCommand(ping.GetAuthAddr(), secret, ping.GetCaPin()),
	}, nil
}

// JoinCommand is the command that joins an agent to the trust domain. The
// secret goes in the environment, not in an argument: every local user can
// read a process's arguments in /proc.
func JoinCommand(authAddr, secret, caPin string) string {
	return fmt.Sprintf("WID_JOIN_TOKEN=%s widagent start --roles agent --auth %s --ca-pin %s", secret, hostPort(authAddr), caPin)
}

// hostPort is the auth address for a join command, or a placeholder when
// the auth service has no TCP listener to tell us about.
func hostPort(authAddr string) string {
	if authAddr == "" {
		return "HOST:PORT"
	}
	return authAddr
}

// expiresText says when a named join token expires, if ever.
func expiresText(p *output.Printer, expires time.Time) string {
	if expires.IsZero() {
		return "never expires"
	}
	return "expires " + p.Time(expires)
}

// Print writes j for people, or as JSON or YAML.
func (j *Join) Print(p *output.Printer, intro string) error {
	return p.Print(j, func(w io.Writer) error {
		uses := "1 use"
		if j.Uses != 1 {
			uses = fmt.Sprintf("%d uses", j.Uses)
		}
		var b strings.Builder
		if intro != "" {
			b.WriteString(intro + "\n\n")
		}
		fmt.Fprintf(&b, "Join token for bot %s (%s, expires %s):\n  %s\n", j.Bot, uses, p.Time(j.Expires), j.Token)
		b.WriteString("It is shown only this once.\n\n")
		fmt.Fprintf(&b, "To join, run on the agent's machine:\n  %s\n", j.JoinCommand)
		b.WriteString("(or keep the token in a file only the agent's user can read, and pass --join-token-file FILE)\n")
		_, err := io.WriteString(w, b.String())
		return err
	})
}
