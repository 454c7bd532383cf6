package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/wid-project/wid/internal/core/spelling"
)

// Decode reads every resource in a YAML stream ("---" between documents;
// empty documents are skipped) or a JSON document, strictly: unknown fields,
// values of the wrong type, non-canonical kinds and invalid resources are
// refused. Each error starts with the document number and, when known, the
// line. Nothing is returned unless every document is good, so a caller never
// applies half a file.
func Decode(data []byte) ([]Resource, error) {
	docs, syntaxErr := splitDocuments(data)
	var errs []error
	var out []Resource
	seen := map[string]int{}
	for _, d := range docs {
		r, err := decodeDocument(d.root)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", d.num, err))
			continue
		}
		if first, ok := seen[Ref(r)]; ok {
			errs = append(errs, fmt.Errorf("document %d: %s is also defined in document %d: keep one of them", d.num, resourceName(r.GetKind(), r.GetMetadata().Name), first))
			continue
		}
		seen[Ref(r)] = d.num
		out = append(out, r)
	}
	if syntaxErr != nil {
		errs = append(errs, syntaxErr)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, errors.New("no resource found: the input is empty or holds only comments, so write at least one resource with kind, version, metadata and spec")
	}
	return out, nil
}

// Unmarshal reads exactly one resource, as sent on the wire (JSON) or in a
// single-document file, with the same strictness as Decode.
func Unmarshal(data []byte) (Resource, error) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, err
	}
	switch len(docs) {
	case 0:
		return nil, errors.New("no resource found: send one resource with kind, version, metadata and spec")
	case 1:
		return decodeDocument(docs[0].root)
	default:
		return nil, fmt.Errorf("found %d resources where one was expected: send them one at a time", len(docs))
	}
}

// MarshalYAML writes r as YAML with two-space indentation, fields in struct
// order and empty optional sections left out, so that what Decode reads is
// written back the same way.
func MarshalYAML(r Resource) ([]byte, error) {
	if isNil(r) {
		return nil, errors.New("no resource to write: pass a resource, not nil")
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("writing %s as YAML: %w", Ref(r), err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing %s as YAML: %w", Ref(r), err)
	}
	return buf.Bytes(), nil
}

// MarshalJSON writes r as compact JSON, fields in struct order and empty
// optional sections left out.
func MarshalJSON(r Resource) ([]byte, error) {
	if isNil(r) {
		return nil, errors.New("no resource to write: pass a resource, not nil")
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("writing %s as JSON: %w", Ref(r), err)
	}
	return b, nil
}

func isNil(r Resource) bool {
	if r == nil {
		return true
	}
	v := reflect.ValueOf(r)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

type document struct {
	num  int // counted from 1 over every document, empty ones included, as an editor shows them
	root *yaml.Node
}

// splitDocuments parses the stream into non-empty documents. A syntax error
// ends the stream; the documents before it are returned with the error.
func splitDocuments(data []byte) ([]document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(yamlSafeJSON(data)))
	var docs []document
	for num := 1; ; num++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, fmt.Errorf("document %d: %s: fix the YAML syntax", num, syntaxMessage(err))
		}
		if len(n.Content) == 0 {
			continue
		}
		root := n.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		docs = append(docs, document{num: num, root: root})
	}
}

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to
// its scanner). For these yaml.v3 reports the line counted from 0, or no
// line at all on the first line; syntaxMessage counts from 1 for them.
var yamlParserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// syntaxMessage rewords a yaml.v3 syntax error as "line N: problem".
func syntaxMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, problem, ok := strings.Cut(rest, ": "); ok {
			if l, convErr := strconv.Atoi(n); convErr == nil {
				line, msg = l, problem
			}
		}
	}
	readerProblem := strings.Contains(msg, "UTF-") || strings.Contains(msg, "control characters") || strings.HasPrefix(msg, "input error")
	switch {
	case readerProblem:
		// The reader knows a byte offset, not a line.
		return msg + " (the input must be UTF-8 or UTF-16 text)"
	case slices.Contains(yamlParserProblems, msg), line == 0:
		// Parser errors count lines from 0; any error without a line is
		// on the first one.
		line++
	}
	return fmt.Sprintf("line %d: %s", line, msg)
}

// yamlSafeJSON rewrites the string literals of a JSON document that use
// escapes yaml.v3 does not read (\/ and UTF-16 surrogate pairs such as
// \ud83d\ude00) into plain UTF-8. Everything else, newlines included, stays
// in place so that line numbers in errors still match the input.
func yamlSafeJSON(data []byte) []byte {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || (trimmed[0] != '{' && trimmed[0] != '[') || bytes.IndexByte(data, '\\') < 0 || !json.Valid(data) {
		return data
	}
	out := make([]byte, 0, len(data))
	for i := 0; i < len(data); {
		if data[i] != '"' {
			out = append(out, data[i])
			i++
			continue
		}
		// In valid JSON a quote outside a string opens one, and the string
		// ends at the next quote that is not escaped.
		j := i + 1
		for data[j] != '"' {
			if data[j] == '\\' {
				j++
			}
			j++
		}
		lit := data[i : j+1]
		if bytes.IndexByte(lit, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(lit, &s); err == nil {
				if b, err := json.Marshal(s); err == nil {
					lit = b
				}
			}
		}
		out = append(out, lit...)
		i = j + 1
	}
	return out
}

func decodeDocument(root *yaml.Node) (Resource, error) {
	if root.Kind != yaml.MappingNode {
		return nil, atLine(root, "a resource must be a mapping with kind, version, metadata and spec, not %s", describe(root))
	}
	kindNode := mappingValue(root, "kind")
	if kindNode == nil {
		return nil, atLine(root, "kind is missing: add kind: with one of %s", strings.Join(Kinds, ", "))
	}
	if kindNode.Kind != yaml.ScalarNode {
		return nil, atLine(kindNode, "kind must be one of %s, not %s", strings.Join(Kinds, ", "), describe(kindNode))
	}
	kind := kindNode.Value
	if !slices.Contains(Kinds, kind) {
		if c, err := NormalizeKind(kind); err == nil {
			return nil, atLine(kindNode, "kind %q is not how resource files name it: write kind: %s", kind, c)
		}
		_, err := NormalizeKind(kind)
		return nil, atLine(kindNode, "%v", err)
	}
	if mappingValue(root, "version") == nil {
		return nil, atLine(root, "version is missing: add version: %s", V1)
	}
	r, err := New(kind)
	if err != nil {
		return nil, atLine(kindNode, "%v", err)
	}
	if err := checkNode(root, reflect.TypeOf(r).Elem(), kind, ""); err != nil {
		return nil, err
	}
	if err := root.Decode(r); err != nil {
		return nil, decodeError(err)
	}
	normalize(reflect.ValueOf(r).Elem())
	if err := r.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return nil, atLine(findField(root, fe.Field), "%s", err)
		}
		return nil, err
	}
	return r, nil
}

// atLine makes an error that starts with the line of n.
func atLine(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("line %d: %s", n.Line, fmt.Sprintf(format, args...))
}

// decodeError rewords what yaml.v3 reports when decoding fails after
// checkNode passed; the "yaml: unmarshal errors:" preamble means nothing to
// a person editing a file.
func decodeError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: fix the value", strings.Join(te.Errors, "; "))
	}
	return fmt.Errorf("%s: fix the YAML", strings.TrimPrefix(err.Error(), "yaml: "))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return "the value " + quote(n.Value)
	}
}

// mappingValue returns the value of key in mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == yaml.ScalarNode && n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// findField follows a FieldError's field path (spec.allow.spiffe[1].path,
// indexes from 1) and returns the deepest node it reaches, so that an error
// about a missing field points at its parent.
func findField(root *yaml.Node, field string) *yaml.Node {
	n := root
	for part := range strings.SplitSeq(field, ".") {
		name, idx, _ := strings.Cut(part, "[")
		next := mappingValue(n, name)
		if next == nil {
			return n
		}
		n = next
		for idx != "" {
			num, rest, _ := strings.Cut(idx, "]")
			i, err := strconv.Atoi(num)
			if err != nil || n.Kind != yaml.SequenceNode || i < 1 || i > len(n.Content) {
				return n
			}
			n = n.Content[i-1]
			idx = strings.TrimPrefix(rest, "[")
		}
	}
	return n
}

var (
	durationType = reflect.TypeFor[Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

type yamlField struct {
	name string
	typ  reflect.Type
}

// yamlFields lists the YAML field names of struct type t in order, with
// inline structs (the Header) flattened, as yaml.v3 sees them.
func yamlFields(t reflect.Type) []yamlField {
	var out []yamlField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if slices.Contains(strings.Split(opts, ","), "inline") {
			out = append(out, yamlFields(f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, yamlField{name: name, typ: f.Type})
	}
	return out
}

func childField(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// checkNode holds n against Go type t before yaml.v3 decodes it: unknown or
// repeated fields, aliases and values of the wrong shape are refused with the
// field path and line, which yaml.v3's own KnownFields errors do not give
// (and node decoding cannot enforce KnownFields at all).
func checkNode(n *yaml.Node, t reflect.Type, kind, field string) error {
	if n.Kind == yaml.AliasNode {
		return atLine(n, "%s uses the alias *%s: anchors and aliases are not supported in resource files, so write the value out", field, n.Value)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // null leaves the zero value; Validate decides if that is allowed
	}
	if n.Tag == "!!binary" {
		// Binary values could carry bytes that are not UTF-8, which JSON
		// cannot hold; no resource field is binary.
		return atLine(n, "%s is tagged !!binary: resources hold text only, so write the value as plain text", field)
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return atLine(n, "%s must be a duration such as 1h, not %s", field, describe(n))
		}
		if _, err := ParseDuration(n.Value); err != nil {
			return atLine(n, "%s: %v", field, err)
		}
		return nil
	case t == timeType:
		var tm time.Time
		if n.Kind != yaml.ScalarNode || n.Decode(&tm) != nil {
			return atLine(n, "%s %s is not a time: write it in RFC 3339, like 2030-01-02T15:04:05Z", field, describeValue(n))
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkNode(n, t.Elem(), kind, field)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return atLine(n, "%s must be a mapping of fields, not %s", field, describe(n))
		}
		fields := yamlFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return atLine(k, "a field name in %s is %s: field names are plain words", where(kind, field), describe(k))
			}
			if line, dup := seen[k.Value]; dup {
				return atLine(k, "field %q appears twice in %s (first on line %d): keep one", k.Value, where(kind, field), line)
			}
			seen[k.Value] = k.Line
			idx := slices.IndexFunc(fields, func(f yamlField) bool { return f.name == k.Value })
			if idx < 0 {
				return atLine(k, "field %q not found in %s: check the spelling%s", k.Value, where(kind, field), suggest(k.Value, fields))
			}
			if err := checkNode(v, fields[idx].typ, kind, childField(field, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return atLine(n, "%s must be a list, not %s: write it as [a, b] or one \"- item\" per line", field, describe(n))
		}
		for i, item := range n.Content {
			if err := checkNode(item, t.Elem(), kind, fmt.Sprintf("%s[%d]", field, i+1)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return atLine(n, "%s must be a mapping of names to values, not %s", field, describe(n))
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return atLine(k, "a name in %s is %s: names are plain words", field, describe(k))
			}
			if line, dup := seen[k.Value]; dup {
				return atLine(k, "%q appears twice in %s (first on line %d): keep one", k.Value, field, line)
			}
			seen[k.Value] = k.Line
			if err := checkNode(v, t.Elem(), kind, childField(field, k.Value)); err != nil {
				return err
			}
		}
		return nil
	default:
		if n.Kind != yaml.ScalarNode {
			return atLine(n, "%s must be a single value, not %s", field, describe(n))
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			switch t.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				return atLine(n, "%s %s is not a whole number: write digits only, like 1", field, describeValue(n))
			default:
				return atLine(n, "%s %s cannot be read as %s: write a plain value", field, describeValue(n), t.Kind())
			}
		}
		return nil
	}
}

func describeValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return quote(n.Value)
	}
	return describe(n)
}

// where names a mapping for people: "role" at the top, "role spec.allow" below.
func where(kind, field string) string {
	if field == "" {
		return kind
	}
	return kind + " " + field
}

// suggest offers the closest known field to a misspelled one, or lists them.
func suggest(name string, fields []yamlField) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	if best := spelling.Nearest(name, names, 3); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return "; the fields here are " + strings.Join(names, ", ")
}

// normalize makes a decoded value equal to what decoding its own output
// gives: empty optional lists and maps become nil (they are not written
// out), required ones become empty rather than nil (they are written as []),
// and times are in UTC.
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(v.Interface().(time.Time).UTC()))
			return
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			if (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.Len() == 0 {
				_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				switch {
				case slices.Contains(strings.Split(opts, ","), "omitempty"):
					fv.SetZero()
				case fv.Kind() == reflect.Slice:
					fv.Set(reflect.MakeSlice(fv.Type(), 0, 0))
				default:
					fv.Set(reflect.MakeMap(fv.Type()))
				}
				continue
			}
			normalize(fv)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			normalize(v.Index(i))
		}
	case reflect.Map:
		// Only map values that are lists need care: an empty list is
		// written as [] and read back as an empty list.
		if v.Type().Elem().Kind() != reflect.Slice {
			return
		}
		iter := v.MapRange()
		for iter.Next() {
			if iter.Value().Len() == 0 {
				v.SetMapIndex(iter.Key(), reflect.MakeSlice(v.Type().Elem(), 0, 0))
			}
		}
	}
}

// UnmarshalStored reads a document the auth service itself wrote (compact
// JSON, as MarshalJSON writes it) with encoding/json, much faster than the
// YAML parser Unmarshal uses for people's files: a store of 50,000
// workload identities is read in well under a second. The checks are the
// same (unknown fields refused, normalized, validated); a document that
// fails them is read again with Unmarshal, so its error reads the same.
func UnmarshalStored(data []byte) (Resource, error) {
	var probe struct {
		Kind    string `json:"kind"`
		Version string `json:"version"`
	}
	if json.Unmarshal(data, &probe) == nil && slices.Contains(Kinds, probe.Kind) && probe.Version != "" {
		if r, err := New(probe.Kind); err == nil {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if dec.Decode(r) == nil && !dec.More() {
				normalize(reflect.ValueOf(r).Elem())
				if r.Validate() == nil {
					return r, nil
				}
			}
		}
	}
	return Unmarshal(data)
}
