// Package cli is widctl's (and widagent's) command line: one package per
// noun below this directory, sharing cmdutil (factory, config, errors and
// exit codes), output (--format) and iostreams. Commands turn flags into an
// options struct, make one call to the auth service through the client, and
// print through output; they never hold logic the core should own.
//
// This package itself holds only the tests that span the whole tree: help
// on every command, generated docs being fresh, bad input, and end-to-end
// runs against a real in-process auth service.
package cli
