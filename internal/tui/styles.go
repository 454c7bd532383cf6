package tui

import (
	"io"
	"os"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// NewRenderer returns the renderer for out, without colour when NO_COLOR is
// set (https://no-color.org) to anything.
func NewRenderer(out io.Writer, getenv func(string) string) *lipgloss.Renderer {
	r := lipgloss.NewRenderer(out)
	if getenv == nil {
		getenv = os.Getenv
	}
	if getenv("NO_COLOR") != "" {
		r.SetColorProfile(termenv.Ascii)
	}
	return r
}

type styles struct {
	title, tab, activeTab, header, dim, selected, warn, denied, ok, bold lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title:     r.NewStyle().Bold(true),
		tab:       r.NewStyle().Padding(0, 1),
		activeTab: r.NewStyle().Padding(0, 1).Bold(true).Reverse(true),
		header:    r.NewStyle().Bold(true).Underline(true),
		dim:       r.NewStyle().Faint(true),
		selected:  r.NewStyle().Reverse(true),
		warn:      r.NewStyle().Foreground(lipgloss.Color("3")),
		denied:    r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		ok:        r.NewStyle().Foreground(lipgloss.Color("2")),
		bold:      r.NewStyle().Bold(true),
	}
}
