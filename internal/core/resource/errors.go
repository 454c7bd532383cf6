package resource

import "fmt"

// FieldError is a validation error about one field of one resource. Decode
// uses Field to find the YAML line that holds the offending value, so a
// person editing a file is sent straight to it.
type FieldError struct {
	// Resource names the resource, e.g. `role "dev"`.
	Resource string
	// Field is the dotted path of the field, with list indexes counted from 1
	// as people count them: spec.allow.spiffe[1].path.
	Field string
	// Message is the sentence after the resource name. It always starts
	// with Field, so a caller that names the field differently (a CLI flag)
	// can swap it, and it says what to do.
	Message string
}

func (e *FieldError) Error() string { return e.Resource + ": " + e.Message }

// fieldErrorf builds a FieldError whose message is the field followed by the
// formatted text, e.g. `spec.uses 0: ...`.
func fieldErrorf(resource, field, format string, args ...any) *FieldError {
	return &FieldError{Resource: resource, Field: field, Message: field + " " + fmt.Sprintf(format, args...)}
}

// resourceName is how errors name a resource: `role "dev"`, or just `role`
// while it has no name yet.
func resourceName(kind, name string) string {
	if name == "" {
		return kind
	}
	return fmt.Sprintf("%s %q", kind, name)
}
