package cmdutil

import (
	"testing"
	"time"
)

// Flags take days, as the docs write lifetimes ("7 days at most").
func TestFlagDurationDays(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "8d": 8 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, " 24h ": 24 * time.Hour,
	} {
		got, err := parseFlagDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("%q = %v, %v; want %v", in, got.D(), err, want)
		}
	}
	for _, in := range []string{"d", "1 d", "-1d", "0d", "1w", "1.5d", "1dd"} {
		if d, err := parseFlagDuration(in); err == nil {
			t.Errorf("%q = %v, want an error", in, d.D())
		}
	}
}
