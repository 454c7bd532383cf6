package cmdutil

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

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
	d, err := parseFlagDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

// leadingDays matches a count of days at the start of a flag value ("7d",
// "1d12h"): the docs speak of days, so flags take them; Go durations stop
// at hours.
var leadingDays = regexp.MustCompile(`^([0-9]{1,5})d`)

func parseFlagDuration(s string) (resource.Duration, error) {
	v := strings.TrimSpace(s)
	var days time.Duration
	if m := leadingDays.FindStringSubmatch(v); m != nil {
		n, _ := strconv.Atoi(m[1])
		days = time.Duration(n) * 24 * time.Hour
		if v = v[len(m[0]):]; v == "" {
			v = "0s"
		}
	}
	rest, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write it like 90s, 15m, 1h, 24h or 7d", s)
	}
	if rest+days <= 0 {
		return 0, fmt.Errorf("duration %q must be positive: write a duration like 90s, 15m, 1h or 7d", s)
	}
	return resource.Duration(rest + days), nil
}

func (durationValue) Type() string { return "duration" }

// DurationVar defines a duration flag such as --max-ttl 24h.
func DurationVar(fs *pflag.FlagSet, p *resource.Duration, name, usage string) {
	fs.Var(durationValue{p}, name, usage)
}
