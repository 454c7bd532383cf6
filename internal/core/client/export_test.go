package client

import "context"

// SetLookupHost replaces the resolver of host names until restore.
func SetLookupHost(f func(ctx context.Context, host string) ([]string, error)) (restore func()) {
	old := lookupHost
	lookupHost = f
	return func() { lookupHost = old }
}
