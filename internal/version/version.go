// Package version holds the version of the wid binaries, stamped at build
// time so that widctl, widagent and the auth service report the same thing.
package version

// Version is set by the linker:
//
//	go build -ldflags "-X github.com/wid-project/wid/internal/version.Version=v1.2.3"
//
// Builds from a checkout without stamping say "dev".
var Version = "dev"
