package cmdutil

import (
	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/core/resource"
)

// durationValue is a flag holding a resource.Duration, so flags accept and
// refuse exactly what resource documents do.
type durationValue struct{ d *resource.Duration }

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		// Empty, so that help does not print "(default 0s)".
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := resource.ParseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (durationValue) Type() string { return "duration" }

// DurationVar defines a duration flag such as --max-ttl 24h.
func DurationVar(fs *pflag.FlagSet, p *resource.Duration, name, usage string) {
	fs.Var(durationValue{p}, name, usage)
}
