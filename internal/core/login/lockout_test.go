package login

import (
	"fmt"
	"testing"
	"time"
)

// TestLockoutPerSource: one source locks only itself out after
// MaxLoginFailures; the user is locked for everyone only after
// MaxUserLoginFailures from many sources; a success clears every count.
func TestLockoutPerSource(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var c Credential
	for range MaxLoginFailures {
		if until, _ := c.Locked("10.0.0.1", now); !until.IsZero() {
			t.Fatal("locked before the last failure")
		}
		c.Fail("10.0.0.1", now)
	}
	if until, everyone := c.Locked("10.0.0.1", now); until.IsZero() || everyone {
		t.Fatalf("after %d failures from one source: locked until %v for everyone %v, want that source locked", MaxLoginFailures, until, everyone)
	}
	if until, _ := c.Locked("10.0.0.2", now); !until.IsZero() {
		t.Fatal("a flood from one source locked the user for another source")
	}
	// Many sources together lock the user for everyone.
	for i := 0; c.LockedUntil.IsZero(); i++ {
		if i > MaxUserLoginFailures {
			t.Fatalf("%d failures from many sources did not lock the user", i+MaxLoginFailures)
		}
		c.Fail(fmt.Sprintf("10.1.%d.%d", i/MaxLoginFailures, i%MaxLoginFailures), now)
	}
	if until, everyone := c.Locked("192.0.2.9", now); until.IsZero() || !everyone {
		t.Fatal("the user is not locked for a new source after the global threshold")
	}
	if len(c.Sources) > maxCredentialSources {
		t.Errorf("the credential follows %d sources, over %d", len(c.Sources), maxCredentialSources)
	}
	if until, _ := c.Locked("192.0.2.9", now.Add(LockoutWindow+time.Second)); !until.IsZero() {
		t.Error("still locked after the lockout window")
	}
	c.Succeeded()
	if until, _ := c.Locked("10.0.0.1", now); !until.IsZero() || c.Failures != 0 {
		t.Error("a success left a lock or a count")
	}
}

func TestLoginSource(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5555":             "127.0.0.1",
		"[::ffff:10.0.0.1]:1":        "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"uid:1000":                   "uid:1000",
	} {
		if got := Source(in); got != want {
			t.Errorf("Source(%q) = %q, want %q", in, got, want)
		}
	}
}
