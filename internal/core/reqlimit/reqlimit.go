// Package reqlimit bounds the size of every string, byte string, list and
// map in a decoded protobuf request, so that what an untrusted caller sends
// cannot grow the store, the audit log or memory without limit. It walks
// the message by reflection: a field added later is bounded by the
// defaults without anyone remembering to add a check.
package reqlimit

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits are the bounds of one service's requests.
type Limits struct {
	// String and Bytes are the default maximum lengths, in bytes, of a
	// string and a bytes field (or list element, or map key or value).
	String int
	Bytes  int
	// Items is the default maximum number of elements of a list or map.
	Items int
	// Fields overrides a default per field, by the field's full name
	// ("pkg.Message.field"). For a list or map the name bounds each
	// element; name+"#" bounds the element count; a map's keys are bounded
	// by name+".key".
	Fields map[string]int
}

// Error says which field is over which limit. It never holds the field's
// content, which may be what the caller tried to flood with.
type Error struct {
	// Field is the path from the request, like attestations[2].reason.
	Field string
	Size  int
	Limit int
	// Unit is "bytes" or "items".
	Unit string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s is %d %s long, over the limit of %d %s", e.Field, e.Size, e.Unit, e.Limit, e.Unit)
}

// Check returns an *Error for the first field of m over its limit, or nil.
func (l *Limits) Check(m proto.Message) error {
	if m == nil {
		return nil
	}
	return l.message(m.ProtoReflect(), "")
}

func (l *Limits) limit(name string, def int) int {
	if n, ok := l.Fields[name]; ok {
		return n
	}
	return def
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

func (l *Limits) message(m protoreflect.Message, path string) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		err = l.field(fd, v, join(path, string(fd.Name())))
		return err == nil
	})
	return err
}

func (l *Limits) field(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	name := string(fd.FullName())
	switch {
	case fd.IsList():
		list := v.List()
		if max := l.limit(name+"#", l.Items); list.Len() > max {
			return &Error{Field: path, Size: list.Len(), Limit: max, Unit: "items"}
		}
		for i := 0; i < list.Len(); i++ {
			if err := l.scalar(fd, name, list.Get(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case fd.IsMap():
		mp := v.Map()
		if max := l.limit(name+"#", l.Items); mp.Len() > max {
			return &Error{Field: path, Size: mp.Len(), Limit: max, Unit: "items"}
		}
		var err error
		mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if fd.MapKey().Kind() == protoreflect.StringKind {
				if n, max := len(k.String()), l.limit(name+".key", l.String); n > max {
					err = &Error{Field: path + " key", Size: n, Limit: max, Unit: "bytes"}
					return false
				}
			}
			// The key names the entry only when it is short enough to print.
			err = l.scalar(fd.MapValue(), name, mv, path+"["+strconv.Quote(k.String())+"]")
			return err == nil
		})
		return err
	default:
		return l.scalar(fd, name, v, path)
	}
	return nil
}

// scalar checks one value of field name (an element of it, for lists and maps).
func (l *Limits) scalar(fd protoreflect.FieldDescriptor, name string, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if n, max := len(v.String()), l.limit(name, l.String); n > max {
			return &Error{Field: path, Size: n, Limit: max, Unit: "bytes"}
		}
	case protoreflect.BytesKind:
		if n, max := len(v.Bytes()), l.limit(name, l.Bytes); n > max {
			return &Error{Field: path, Size: n, Limit: max, Unit: "bytes"}
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return l.message(v.Message(), path)
	}
	return nil
}
