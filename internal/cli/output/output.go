// Package output prints command results in the format the user chose:
// aligned tables for people, JSON or YAML for scripts. Every command goes
// through it so that --format means the same thing everywhere. JSON and YAML
// come from output structs or resource documents, never from protobuf types.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
)

// Format is how results are printed.
type Format string

// Formats.
const (
	Text Format = "text"
	JSON Format = "json"
	YAML Format = "yaml"
)

// Formats lists the accepted values of --format, for help and errors.
var Formats = []Format{Text, JSON, YAML}

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case Text, JSON, YAML:
		return f, nil
	case "":
		return Text, nil
	}
	return "", fmt.Errorf("unknown output format %q: use text, json or yaml", s)
}

// Printer writes results to Out in Format.
type Printer struct {
	Out    io.Writer
	Format Format
	// TTY says a person reads Out: times then also show how far away they are.
	TTY bool
	// Now is the clock for relative times; nil means time.Now.
	Now func() time.Time
}

// Print writes data as JSON or YAML, or calls text for the text format.
func (p *Printer) Print(data any, text func(w io.Writer) error) error {
	switch p.Format {
	case JSON:
		return WriteJSON(p.Out, data)
	case YAML:
		return WriteYAML(p.Out, data)
	default:
		return text(p.Out)
	}
}

// WriteJSON writes v as indented JSON followed by a newline.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// WriteYAML writes v as one YAML document.
func WriteYAML(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding YAML: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// Table prints rows in aligned columns under upper-case headers.
type Table struct {
	tw *tabwriter.Writer
}

// NewTable starts a table on w.
func NewTable(w io.Writer, headers ...string) *Table {
	t := &Table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(headers) > 0 {
		up := make([]string, len(headers))
		for i, h := range headers {
			up[i] = strings.ToUpper(h)
		}
		t.line(up)
	}
	return t
}

// Row adds a row; empty cells print as "-" so that columns stay readable.
func (t *Table) Row(cells ...string) {
	out := make([]string, len(cells))
	for i, c := range cells {
		if c == "" {
			c = "-"
		}
		out[i] = oneLine(c)
	}
	t.line(out)
}

func (t *Table) line(cells []string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// Flush writes the table out.
func (t *Table) Flush() error { return t.tw.Flush() }

// Details prints "Key:  value" lines with the values aligned, for one item.
type Details struct {
	tw *tabwriter.Writer
}

// NewDetails starts a details block on w.
func NewDetails(w io.Writer) *Details {
	return &Details{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

// Field adds a field; an empty value is left out so that the view shows
// only what is set.
func (d *Details) Field(key, value string) {
	if value == "" {
		return
	}
	fmt.Fprintf(d.tw, "%s:\t%s\n", key, oneLine(value))
}

// List adds a field with one value per line.
func (d *Details) List(key string, values []string) {
	for i, v := range values {
		k := key + ":"
		if i > 0 {
			k = ""
		}
		fmt.Fprintf(d.tw, "%s\t%s\n", k, oneLine(v))
	}
}

// Flush writes the block out.
func (d *Details) Flush() error { return d.tw.Flush() }

// oneLine keeps a cell from breaking the table: values come from the server
// and from users, and a newline or tab in one would misalign every row.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ", "\t", " ").Replace(s)
}

// Time formats t for tables: RFC 3339 in UTC, and for a person also how far
// away it is.
func (p *Printer) Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	s := t.UTC().Format(time.RFC3339)
	if !p.TTY {
		return s
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	return s + " (" + Relative(t, now()) + ")"
}

// Relative says how far t is from now in one coarse unit: "in 59m", "3h ago".
func Relative(t, now time.Time) string {
	d := t.Sub(now)
	future := d >= 0
	if !future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		s = fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		s = fmt.Sprintf("%dh", int(d.Hours()))
	default:
		s = fmt.Sprintf("%dd", int(d.Hours()/24))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}
