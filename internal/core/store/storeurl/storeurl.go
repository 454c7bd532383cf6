// Package storeurl chooses the store.Backend that a --store URL names:
// sqlite://PATH (the default, <data-dir>/wid.db) or postgres://... It is
// the one place that knows every backend, so that the auth service takes
// any of them and the CLI needs no database imports.
package storeurl

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/wid-project/wid/internal/core/store"
	"github.com/wid-project/wid/internal/core/store/postgres"
	"github.com/wid-project/wid/internal/core/store/sqlite"
)

// DefaultFile is the SQLite store's file name inside the data dir.
const DefaultFile = "wid.db"

// Spec is a parsed --store URL.
type Spec struct {
	// Kind is "sqlite" or "postgres".
	Kind string
	// Path is the SQLite file.
	Path string
	// url is the PostgreSQL URL, password included: never print it.
	url string
}

// Parse reads raw, which is empty (SQLite at <dataDir>/wid.db),
// sqlite://PATH or a postgres:// (or postgresql://) URL.
func Parse(raw, dataDir string) (Spec, error) {
	switch {
	case raw == "":
		return Spec{Kind: "sqlite", Path: filepath.Join(dataDir, DefaultFile)}, nil
	case strings.HasPrefix(raw, "sqlite://"):
		// Everything after the scheme is the path, so that sqlite:///var/lib/wid.db
		// is absolute and sqlite://wid.db relative, as users write them.
		p := strings.TrimPrefix(raw, "sqlite://")
		if p == "" {
			return Spec{}, fmt.Errorf("--store sqlite:// needs a file path, like sqlite:///var/lib/wid/wid.db")
		}
		return Spec{Kind: "sqlite", Path: p}, nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		return Spec{Kind: "postgres", url: raw}, nil
	}
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		// Not a URL: say so without echoing it, as it may hold a password.
		return Spec{}, fmt.Errorf("--store takes a URL: sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE")
	}
	return Spec{}, fmt.Errorf("--store scheme %q is unknown: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE", scheme)
}

// String describes the store for people, without credentials.
func (s Spec) String() string {
	if s.Kind == "postgres" {
		return postgres.RedactURL(s.url)
	}
	return "sqlite://" + s.Path
}

// Open opens the store; its errors say which store and what failed.
func (s Spec) Open(ctx context.Context) (store.Backend, error) {
	if s.Kind == "postgres" {
		return postgres.Open(ctx, s.url)
	}
	db, err := sqlite.Open(ctx, s.Path)
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite store %s: %w", s.Path, err)
	}
	return db, nil
}
