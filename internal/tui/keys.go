package tui

import "github.com/charmbracelet/bubbles/key"

// keyMap is every key of the dashboard; ? shows it through bubbles/help.
type keyMap struct {
	NextTab, PrevTab, Tab1, Tab2, Tab3, Tab4           key.Binding
	Up, Down, Filter, Clear, Open, Explain, Help, Quit key.Binding
}

func newKeyMap() keyMap {
	return keyMap{
		NextTab: key.NewBinding(key.WithKeys("tab"), key.WithHelp("tab", "next tab")),
		PrevTab: key.NewBinding(key.WithKeys("shift+tab"), key.WithHelp("shift+tab", "previous tab")),
		Tab1:    key.NewBinding(key.WithKeys("1"), key.WithHelp("1", "SVIDs")),
		Tab2:    key.NewBinding(key.WithKeys("2"), key.WithHelp("2", "attestations")),
		Tab3:    key.NewBinding(key.WithKeys("3"), key.WithHelp("3", "bundles")),
		Tab4:    key.NewBinding(key.WithKeys("4"), key.WithHelp("4", "roles")),
		Up:      key.NewBinding(key.WithKeys("up", "k"), key.WithHelp("↑/k", "up")),
		Down:    key.NewBinding(key.WithKeys("down", "j"), key.WithHelp("↓/j", "down")),
		Filter:  key.NewBinding(key.WithKeys("/"), key.WithHelp("/", "filter")),
		Clear:   key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "clear filter / close")),
		Open:    key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "details")),
		Explain: key.NewBinding(key.WithKeys("e"), key.WithHelp("e", "explain (Roles)")),
		Help:    key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:    key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	}
}

// ShortHelp is the one-line help under every screen.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.NextTab, k.Filter, k.Open, k.Help, k.Quit}
}

// FullHelp is what ? shows.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.NextTab, k.PrevTab, k.Tab1, k.Tab2, k.Tab3, k.Tab4},
		{k.Up, k.Down, k.Open, k.Filter, k.Clear, k.Explain},
		{k.Help, k.Quit},
	}
}
