// Package tui is widctl's dashboard: a bubbletea root model and one model
// per tab (SVIDs, Attestations, Bundles, Roles), fed by a Feed that reads
// the auth service in its own goroutine. Nothing in Update blocks; it never
// calls the auth service itself.
package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/advice"
	"google.golang.org/grpc/status"
)

// MinWidth and MinHeight are the smallest terminal the dashboard draws in.
const (
	MinWidth  = 80
	MinHeight = 24
)

var tabNames = []string{"SVIDs", "Attestations", "Bundles", "Roles"}

// Options configure a Model.
type Options struct {
	// Target names the auth service: the admin socket path or host:port,
	// or several replicas' addresses.
	Target string
	// Replica, when set, names the replica the dashboard talks to now:
	// with several, the header names it.
	Replica func() string
	// Messages is where the feed's messages arrive (Feed.Messages); nil in
	// tests that send messages themselves.
	Messages <-chan tea.Msg
	// Renderer draws styles; NewRenderer honours NO_COLOR.
	Renderer *lipgloss.Renderer
	// Now is the clock; tests fix it so that screens are stable.
	Now func() time.Time
	// Explain asks the auth service to explain a decision, off the Update
	// goroutine (Feed.Explain); nil leaves the Roles tab's form unanswered.
	Explain func(*authv1.ExplainRequest) tea.Cmd
	// NoTick turns off the once-a-second redraw (remaining-life bars), for tests.
	NoTick bool
}

// Model is the dashboard's root model.
type Model struct {
	opts     Options
	keys     keyMap
	help     help.Model
	st       styles
	width    int
	height   int
	tab      int
	showHelp bool

	ping         *authv1.PingResponse
	connected    bool
	reconnectErr error
	// auditDenied is why the caller may not read the audit log, which the
	// SVIDs and Attestations tabs show; tabPicked says the user chose a
	// tab, so a denial does not move them off it.
	auditDenied error
	tabPicked   bool

	svids   *eventList
	attests *eventList
	bundle  *authv1.GetBundleResponse
	cas     []*authv1.CAInfo
	roles   *rolesTab
	// marks are the revoked serials and the locks both tabs flag.
	marks *marks
}

// New returns the dashboard model.
func New(opts Options) *Model {
	if opts.Renderer == nil {
		opts.Renderer = lipgloss.DefaultRenderer()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keys := newKeyMap()
	st := newStyles(opts.Renderer)
	h := help.New()
	h.Styles.ShortKey = opts.Renderer.NewStyle().Bold(true)
	h.Styles.FullKey = opts.Renderer.NewStyle().Bold(true)
	h.Styles.ShortDesc = opts.Renderer.NewStyle()
	h.Styles.FullDesc = opts.Renderer.NewStyle()
	h.Styles.ShortSeparator = opts.Renderer.NewStyle().Faint(true)
	h.Styles.FullSeparator = opts.Renderer.NewStyle().Faint(true)
	h.Styles.Ellipsis = opts.Renderer.NewStyle().Faint(true)
	mk := newMarks()
	m := &Model{
		opts: opts, keys: keys, help: h, st: st, marks: mk,
		svids:   newEventList(keys, st, svidColumns(mk)),
		attests: newEventList(keys, st, attestColumns()),
		roles:   newRolesTab(keys, st, opts.Explain),
	}
	m.svids.extra = func(e *authv1.AuditEvent) [][2]string { return mk.svidState(e, opts.Now()) }
	m.roles.marks, m.roles.now = mk, opts.Now
	return m
}

type tickMsg time.Time

func tick() tea.Cmd { return tea.Every(time.Second, func(t time.Time) tea.Msg { return tickMsg(t) }) }

// Init waits for the feed.
func (m *Model) Init() tea.Cmd {
	cmds := []tea.Cmd{waitFor(m.opts.Messages)}
	if !m.opts.NoTick {
		cmds = append(cmds, tick())
	}
	return tea.Batch(cmds...)
}

// SetSize lays the tabs out in w x h.
func (m *Model) SetSize(w, h int) {
	m.width, m.height = w, h
	m.help.Width = w
	body := m.bodyHeight()
	m.svids.SetSize(w, body)
	m.attests.SetSize(w, body)
	m.roles.SetSize(w, body)
}

// header (2 lines), tab bar (1), tab title (1), help line (1).
func (m *Model) bodyHeight() int { return max(m.height-5, 1) }

func (m *Model) list() *eventList {
	switch m.tab {
	case 0:
		return m.svids
	case 1:
		return m.attests
	}
	return nil
}

// Update handles keys, sizes and the feed's messages.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if fm, ok := msg.(feedMsg); ok {
		for _, msg := range fm {
			m.handleFeed(msg)
		}
		return m, waitFor(m.opts.Messages)
	}
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.SetSize(msg.Width, msg.Height)
		return m, nil
	case tickMsg:
		return m, tick()
	case tea.KeyMsg:
		return m, m.handleKey(msg)
	case ConnectedMsg, ReconnectingMsg, AuditDeniedMsg, EventMsg, BundleMsg, CAsMsg, ResourcesMsg, ExplainResultMsg:
		m.handleFeed(msg)
	}
	return m, nil
}

func (m *Model) handleFeed(msg tea.Msg) {
	switch msg := msg.(type) {
	case ConnectedMsg:
		m.ping, m.connected, m.reconnectErr = msg.Ping, true, nil
	case ReconnectingMsg:
		m.connected, m.reconnectErr = false, msg.Err
	case AuditDeniedMsg:
		m.auditDenied = msg.Err
		if !m.tabPicked && m.tab < 2 {
			// Start where there is something to see.
			m.tab = 2
		}
	case EventMsg:
		switch e := msg.Event; {
		case svidEvent(e):
			m.svids.add(e)
		case attestEvent(e):
			m.attests.add(e)
		case e.Type == "svid.x509.revoked" && e.Outcome != "denied":
			m.marks.revoke(e.Serial)
		}
	case BundleMsg:
		m.bundle = msg.Bundle
	case CAsMsg:
		m.cas = msg.CAs
	case ResourcesMsg:
		switch {
		case msg.Kind == "lock" && msg.Err != nil:
			m.marks.setLocksDenied(msg.Err)
			return
		case msg.Kind == "lock":
			m.marks.setLocks(msg.Resources)
			return
		}
		if msg.Err != nil {
			m.roles.setDenied(msg.Kind, msg.Err)
		} else {
			m.roles.set(msg.Kind, msg.Resources)
		}
	case ExplainResultMsg:
		m.roles.Update(msg)
	}
}

func (m *Model) handleKey(msg tea.KeyMsg) tea.Cmd {
	l := m.list()
	if msg.String() == "ctrl+c" {
		return tea.Quit
	}
	if l != nil && l.Capturing() {
		return l.Update(msg)
	}
	if m.tab == 3 && m.roles.Capturing() {
		return m.roles.Update(msg)
	}
	switch {
	case key.Matches(msg, m.keys.Quit):
		return tea.Quit
	case key.Matches(msg, m.keys.Help):
		m.showHelp = !m.showHelp
		return nil
	case m.showHelp && key.Matches(msg, m.keys.Clear):
		m.showHelp = false
		return nil
	case key.Matches(msg, m.keys.NextTab, m.keys.PrevTab, m.keys.Tab1, m.keys.Tab2, m.keys.Tab3, m.keys.Tab4) && !m.tabPicked:
		m.tabPicked = true
		return m.handleKey(msg)
	case key.Matches(msg, m.keys.NextTab):
		m.tab = (m.tab + 1) % len(tabNames)
	case key.Matches(msg, m.keys.PrevTab):
		m.tab = (m.tab + len(tabNames) - 1) % len(tabNames)
	case key.Matches(msg, m.keys.Tab1):
		m.tab = 0
	case key.Matches(msg, m.keys.Tab2):
		m.tab = 1
	case key.Matches(msg, m.keys.Tab3):
		m.tab = 2
	case key.Matches(msg, m.keys.Tab4):
		m.tab = 3
	default:
		if l != nil {
			return l.Update(msg)
		}
		if m.tab == 3 {
			return m.roles.Update(msg)
		}
	}
	return nil
}

// View draws the screen.
func (m *Model) View() string {
	if m.width == 0 {
		return "starting…"
	}
	if m.width < MinWidth || m.height < MinHeight {
		return fmt.Sprintf("The terminal is %dx%d: widctl tui needs at least %dx%d.\nMake the window larger, or press q to quit.", m.width, m.height, MinWidth, MinHeight)
	}
	var b strings.Builder
	b.WriteString(m.headerView())
	b.WriteByte('\n')
	b.WriteString(m.tabsView())
	b.WriteByte('\n')
	body := m.bodyHeight()
	if m.showHelp {
		b.WriteString(m.st.title.Render("Keys"))
		b.WriteByte('\n')
		b.WriteString(clip(strings.Split(m.help.FullHelpView(m.keys.FullHelp()), "\n"), m.width, body))
	} else {
		b.WriteString(fit(m.tabTitle(), m.width))
		b.WriteByte('\n')
		b.WriteString(m.tabView(body))
	}
	b.WriteByte('\n')
	b.WriteString(fit(m.help.ShortHelpView(m.keys.ShortHelp()), m.width))
	return b.String()
}

func (m *Model) headerView() string {
	td, who := "…", "…"
	if m.ping != nil {
		td = m.ping.TrustDomain
		who = m.ping.IdentityKind
		if m.ping.IdentityName != "" && m.ping.IdentityName != m.ping.IdentityKind {
			who += " " + m.ping.IdentityName
		}
	}
	state := m.st.warn.Render("connecting")
	switch {
	case m.connected:
		state = m.st.ok.Render("connected")
	case m.reconnectErr != nil:
		state = m.st.denied.Render("reconnecting")
	}
	line1 := m.st.title.Render("wid · spiffe://"+td) + "  " + state
	target := m.opts.Target
	if m.opts.Replica != nil {
		if r := m.opts.Replica(); r != "" && r != target {
			target = r + " (replica of " + target + ")"
		}
	}
	line2 := m.st.dim.Render("auth " + target + " · you are " + who)
	if m.reconnectErr != nil && !m.connected {
		line2 += m.st.dim.Render(" · " + errText(m.reconnectErr))
	} else if m.deniedAny() {
		line2 += m.st.dim.Render(" · ✗ not allowed by your roles")
	}
	return fit(line1, m.width) + "\n" + fit(line2, m.width)
}

func (m *Model) tabsView() string {
	var parts []string
	for i, n := range tabNames {
		label := fmt.Sprintf("%d %s", i+1, n)
		if m.tabDenied(i) != nil {
			label += " ✗"
		}
		if i == m.tab {
			parts = append(parts, m.st.activeTab.Render("["+label+"]"))
		} else {
			parts = append(parts, m.st.tab.Render(" "+label+" "))
		}
	}
	return fit(strings.Join(parts, ""), m.width)
}

func (m *Model) tabTitle() string {
	now := m.opts.Now()
	switch m.tab {
	case 0:
		if m.auditDenied != nil {
			return m.st.bold.Render("Issued SVIDs, newest first")
		}
		var issued, deniedN int
		for _, e := range m.svids.events {
			if now.Sub(eventTime(e)) > time.Minute || eventTime(e).After(now) {
				continue
			}
			if denied(e) {
				deniedN++
			} else {
				issued++
			}
		}
		return m.st.bold.Render("Issued SVIDs, newest first") + fmt.Sprintf("  · last minute: %d issued, %d denied", issued, deniedN)
	case 1:
		return m.st.bold.Render("Workload attestations, newest first")
	case 2:
		return m.st.bold.Render("Trust bundle and CAs") + "  · refreshed after every rotation step"
	}
	return m.st.bold.Render("Roles, workload identities and locks") + "  · e on a role explains a decision"
}

// tabDenied is why the caller may not see tab i, or nil.
func (m *Model) tabDenied(i int) error {
	switch i {
	case 0, 1:
		return m.auditDenied
	case 3:
		return m.roles.denied["role"]
	}
	return nil
}

func (m *Model) deniedAny() bool {
	for i := range tabNames {
		if m.tabDenied(i) != nil {
			return true
		}
	}
	return false
}

// deniedView is what a tab the caller may not see shows instead: why, in
// the auth service's words, which name the rule an admin would add.
func deniedView(what string, err error, st styles, w, h int) string {
	return clip(wrap("Your roles do not let you see "+what+": "+errText(err)+".", st.warn, w, 0), w, h)
}

// wrap breaks text into lines of at most w cells, indented by indent.
func wrap(text string, st lipgloss.Style, w, indent int) []string {
	lines := strings.Split(st.Width(max(w-indent, 10)).Render(text), "\n")
	for i, l := range lines {
		lines[i] = strings.Repeat(" ", indent) + strings.TrimRight(l, " ")
	}
	return lines
}

// errText is an error as one sentence for the screen: a gRPC status's
// message, without the "rpc error: code = ..." wrapping, and the next step
// it names, in the same words as widctl's.
func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return advice.Status(s)
	}
	return advice.Text(err)
}

func (m *Model) tabView(h int) string {
	now := m.opts.Now()
	if err := m.tabDenied(m.tab); err != nil && m.tab < 2 {
		return deniedView("the audit log, which this tab shows", err, m.st, m.width, h)
	}
	switch m.tab {
	case 0, 1:
		return m.list().View(now)
	case 2:
		return bundleView(m.bundle, m.cas, now, m.st, m.width, h)
	}
	return m.roles.View()
}
