package tui

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/client"
)

func TestNeedsTerminal(t *testing.T) {
	ios, _, out, _ := iostreams.Test()
	f := cmdutil.NewFactory(ios)
	dialed := false
	f.Client = func(context.Context) (*client.Client, error) {
		dialed = true
		return nil, errors.New("no auth service in this test")
	}
	cmd := NewCmdTUI(f, nil)
	cmd.SetArgs(nil)
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "needs a terminal") {
		t.Fatalf("widctl tui without a terminal: %v, want it to say it needs one", err)
	}
	if dialed || out.Len() != 0 {
		t.Errorf("widctl tui without a terminal dialed or drew %q", out.String())
	}
}

func TestRejectsArgs(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	ran := false
	cmd := NewCmdTUI(cmdutil.NewFactory(ios), func(*Options) error { ran = true; return nil })
	cmd.SetArgs([]string{"extra"})
	if err := cmd.Execute(); err == nil || ran {
		t.Errorf("widctl tui extra: err %v, ran %v; want a refusal", err, ran)
	}
}
