package tui

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	authv1 "github.com/wid-project/wid/api/auth/v1"
)

// maxEvents bounds what a tab keeps, so that a busy trust domain cannot grow
// the dashboard's memory without end.
const maxEvents = 5000

// column is one column of an event list: a header, a width (0: share the
// rest) and the cell of an event. A cell may be styled; cut keeps styles.
type column struct {
	title string
	width int // fixed; 0 shares the rest by flex
	flex  int
	cell  func(e *authv1.AuditEvent, now time.Time, st styles) string
}

// eventList is a filterable, scrollable list of audit events, newest first,
// with a detail pane. The SVIDs and Attestations tabs are eventLists.
type eventList struct {
	keys    keyMap
	st      styles
	cols    []column
	events  []*authv1.AuditEvent // oldest first; shown reversed
	shown   []*authv1.AuditEvent // newest first, filtered
	cursor  int
	offset  int
	filter  textinput.Model
	editing bool
	detail  bool
	// detailOffset scrolls the detail pane.
	detailOffset int
	width        int
	height       int
	// extra adds fields to an event's detail pane, from what the
	// dashboard knows beside the event (a revocation, a lock); nil adds
	// none.
	extra func(e *authv1.AuditEvent) [][2]string
}

func newEventList(keys keyMap, st styles, cols []column) *eventList {
	ti := textinput.New()
	ti.Prompt = "/"
	ti.Placeholder = "filter"
	return &eventList{keys: keys, st: st, cols: cols, filter: ti}
}

// SetSize gives the list its area.
func (l *eventList) SetSize(w, h int) { l.width, l.height = w, h; l.filter.Width = w - 2; l.clamp() }

// Capturing says whether the list wants every key (the filter is being typed).
func (l *eventList) Capturing() bool { return l.editing }

func (l *eventList) add(e *authv1.AuditEvent) {
	l.events = append(l.events, e)
	if len(l.events) > maxEvents {
		// The oldest go, from the list and from the end of what is shown.
		drop := l.events[:len(l.events)-maxEvents]
		l.events = slices.Clone(l.events[len(l.events)-maxEvents:])
		gone := make(map[*authv1.AuditEvent]bool, len(drop))
		for _, d := range drop {
			gone[d] = true
		}
		for len(l.shown) > 0 && gone[l.shown[len(l.shown)-1]] {
			l.shown = l.shown[:len(l.shown)-1]
		}
	}
	// Only the new event is matched: with 500 events a second arriving,
	// refiltering everything each time would not keep up.
	if !l.matches(e) {
		return
	}
	l.shown = slices.Insert(l.shown, 0, e)
	// Keep the selected event selected as new ones arrive above it.
	if l.cursor > 0 {
		l.cursor++
		l.offset++
	}
	l.clamp()
}

func (l *eventList) matches(e *authv1.AuditEvent) bool {
	q := strings.ToLower(strings.TrimSpace(l.filter.Value()))
	if q == "" {
		return true
	}
	return strings.Contains(strings.ToLower(searchText(e)), q)
}

// searchText is every field of e, so that the filter matches any column.
func searchText(e *authv1.AuditEvent) string {
	var b strings.Builder
	for _, f := range eventFields(e) {
		b.WriteString(f[1])
		b.WriteByte('\n')
	}
	return b.String()
}

func (l *eventList) refilter() {
	l.shown = l.shown[:0]
	for i := len(l.events) - 1; i >= 0; i-- {
		if l.matches(l.events[i]) {
			l.shown = append(l.shown, l.events[i])
		}
	}
}

func (l *eventList) rowsHeight() int {
	h := l.height - 2 // column header and filter line
	return max(h, 1)
}

func (l *eventList) clamp() {
	l.cursor = min(max(l.cursor, 0), max(len(l.shown)-1, 0))
	rh := l.rowsHeight()
	if l.cursor < l.offset {
		l.offset = l.cursor
	}
	if l.cursor >= l.offset+rh {
		l.offset = l.cursor - rh + 1
	}
	l.offset = max(0, min(l.offset, max(len(l.shown)-rh, 0)))
}

func (l *eventList) Update(msg tea.Msg) tea.Cmd {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	if l.editing {
		switch km.String() {
		case "esc":
			l.editing = false
			l.filter.Blur()
			l.filter.SetValue("")
		case "enter":
			l.editing = false
			l.filter.Blur()
		default:
			var cmd tea.Cmd
			l.filter, cmd = l.filter.Update(msg)
			l.cursor, l.offset = 0, 0
			l.refilter()
			l.clamp()
			return cmd
		}
		l.refilter()
		l.clamp()
		return nil
	}
	switch {
	case l.detail && (key.Matches(km, l.keys.Clear) || key.Matches(km, l.keys.Open)):
		l.detail = false
	case l.detail && key.Matches(km, l.keys.Up):
		l.detailOffset = max(l.detailOffset-1, 0)
	case l.detail && key.Matches(km, l.keys.Down):
		l.detailOffset++ // detailView bounds it
	case key.Matches(km, l.keys.Clear):
		l.filter.SetValue("")
		l.refilter()
		l.clamp()
	case key.Matches(km, l.keys.Filter):
		l.detail = false
		l.editing = true
		return l.filter.Focus()
	case key.Matches(km, l.keys.Up):
		l.cursor--
		l.clamp()
	case key.Matches(km, l.keys.Down):
		l.cursor++
		l.clamp()
	case key.Matches(km, l.keys.Open):
		l.detail, l.detailOffset = len(l.shown) > 0, 0
	}
	return nil
}

func (l *eventList) selected() *authv1.AuditEvent {
	if l.cursor < len(l.shown) {
		return l.shown[l.cursor]
	}
	return nil
}

// widths gives the flexible columns what the fixed ones leave.
func (l *eventList) widths() []int {
	ws := make([]int, len(l.cols))
	fixed, flex := 2, 0 // the cursor mark
	for i, c := range l.cols {
		ws[i] = c.width
		fixed += c.width + 1
		if c.width == 0 {
			flex += max(c.flex, 1)
		}
	}
	if flex > 0 {
		rest := l.width - fixed + 1
		last := -1
		for i, c := range l.cols {
			if c.width == 0 {
				ws[i] = max(rest*max(c.flex, 1)/flex, 6)
				last = i
			}
		}
		// Rounding leftovers go to the last flexible column.
		used := fixed - 1
		for i, c := range l.cols {
			if c.width == 0 {
				used += ws[i]
			}
		}
		if last >= 0 && used < l.width {
			ws[last] += l.width - used
		}
	}
	return ws
}

func (l *eventList) View(now time.Time) string {
	if l.detail {
		if e := l.selected(); e != nil {
			return l.detailView(e)
		}
	}
	ws := l.widths()
	var b strings.Builder
	hdr := make([]string, len(l.cols))
	for i, c := range l.cols {
		hdr[i] = c.title
	}
	b.WriteString(l.st.header.Render(fit("  "+row(hdr, ws), l.width)))
	b.WriteByte('\n')
	rh := l.rowsHeight()
	lines := 0
	if len(l.shown) == 0 {
		msg := "no events yet"
		if l.filter.Value() != "" {
			msg = "no events match " + fmt.Sprintf("%q", l.filter.Value())
		}
		b.WriteString(l.st.dim.Render("  " + msg))
		b.WriteByte('\n')
		lines++
	}
	for i := l.offset; i < len(l.shown) && i < l.offset+rh; i++ {
		e := l.shown[i]
		cells := make([]string, len(l.cols))
		for j, c := range l.cols {
			cells[j] = c.cell(e, now, l.st)
		}
		line := "  " + row(cells, ws)
		if i == l.cursor {
			line = l.st.selected.Render("›") + " " + row(cells, ws)
		}
		b.WriteString(fit(line, l.width))
		b.WriteByte('\n')
		lines++
	}
	for ; lines < rh; lines++ {
		b.WriteByte('\n')
	}
	switch {
	case l.editing:
		b.WriteString(l.filter.View())
	case l.filter.Value() != "":
		b.WriteString(l.st.dim.Render(fmt.Sprintf("filter: %s (%d of %d, esc clears)", l.filter.Value(), len(l.shown), len(l.events))))
	default:
		b.WriteString(l.st.dim.Render(fmt.Sprintf("%d events", len(l.events))))
	}
	return b.String()
}

// detailLines is every non-empty field of e, long values wrapped, so that
// nothing is cut off.
func (l *eventList) detailLines(e *authv1.AuditEvent) []string {
	const label = 22
	vw := max(l.width-label-1, 10)
	var lines []string
	fields := eventFields(e)
	if l.extra != nil {
		fields = append(fields, l.extra(e)...)
	}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		name := f[0]
		for v := []rune(f[1]); len(v) > 0; {
			n := min(len(v), vw)
			lines = append(lines, fmt.Sprintf("%-*s %s", label, name, string(v[:n])))
			v, name = v[n:], ""
		}
	}
	return append(lines, certificateLines(e, label, vw, l.st)...)
}

func (l *eventList) detailView(e *authv1.AuditEvent) string {
	lines := l.detailLines(e)
	rows := max(l.height-1, 1)
	l.detailOffset = max(0, min(l.detailOffset, len(lines)-rows))
	title := l.st.title.Render("Event "+fmt.Sprint(e.Seq)) + l.st.dim.Render("  (esc or enter closes)")
	if len(lines) > rows {
		title += l.st.dim.Render(fmt.Sprintf("  ↑/↓ scroll, %d-%d of %d", l.detailOffset+1, min(l.detailOffset+rows, len(lines)), len(lines)))
	}
	end := min(l.detailOffset+rows, len(lines))
	return clip(append([]string{title}, lines[l.detailOffset:end]...), l.width, l.height)
}

// eventFields is every field of an event, named, in a stable order.
func eventFields(e *authv1.AuditEvent) [][2]string {
	var t string
	if e.Time != nil {
		t = e.Time.AsTime().UTC().Format(time.RFC3339)
	}
	var ttl string
	if e.TtlSeconds > 0 {
		ttl = (time.Duration(e.TtlSeconds) * time.Second).String()
	}
	fs := [][2]string{
		{"seq", fmt.Sprint(e.Seq)}, {"time", t}, {"type", e.Type}, {"outcome", e.Outcome},
		{"reason", e.Reason}, {"actor", e.Actor}, {"host", e.Host}, {"remote_addr", e.RemoteAddr},
		{"spiffe_id", e.SpiffeId}, {"svid_type", e.SvidType}, {"serial", e.Serial}, {"ttl", ttl},
		{"dns_sans", strings.Join(e.DnsSans, ", ")}, {"ip_sans", strings.Join(e.IpSans, ", ")},
		{"resource", e.Resource},
	}
	for _, k := range slices.Sorted(maps.Keys(e.Attributes)) {
		fs = append(fs, [2]string{k, e.Attributes[k]})
	}
	for _, k := range slices.Sorted(maps.Keys(e.Details)) {
		if k == certificateDetail {
			continue // certificateLines decodes it; as base64 it says nothing
		}
		fs = append(fs, [2]string{k, e.Details[k]})
	}
	fs = append(fs, [2]string{"hash", e.Hash})
	return fs
}

// row lays out cells in columns of the given widths.
func row(cells []string, ws []int) string {
	var b strings.Builder
	for i, c := range cells {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(pad(c, ws[i]))
	}
	return b.String()
}

// pad cuts or pads s to exactly w cells, ANSI-aware.
func pad(s string, w int) string {
	if lipgloss.Width(s) > w {
		return cut(s, w)
	}
	return s + strings.Repeat(" ", w-lipgloss.Width(s))
}

// fit cuts s to w cells, padding nothing.
func fit(s string, w int) string {
	if lipgloss.Width(s) > w {
		return cut(s, w)
	}
	return s
}
