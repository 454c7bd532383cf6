package ca_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/core/ca"
)

func TestLoadOrCreateKEKCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keys")
	kek, err := ca.LoadOrCreateKEK(dir)
	if err != nil {
		t.Fatalf("LoadOrCreateKEK: %v", err)
	}
	assertMode(t, dir, 0o700)
	path := filepath.Join(dir, ca.KEKFileName)
	assertMode(t, path, 0o600)
	if b, err := os.ReadFile(path); err != nil || len(b) != 32 {
		t.Fatalf("key file: %d bytes, err %v; want 32 bytes", len(b), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("keys directory holds %d entries, want only %s", len(entries), ca.KEKFileName)
	}

	// A second load finds the same key: what one sealed, the other opens.
	again, err := ca.LoadOrCreateKEK(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateKEK: %v", err)
	}
	ad := []byte("spiffe/abc")
	sealed, err := kek.Seal([]byte("secret"), ad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed output contains the plaintext")
	}
	got, err := again.Open(sealed, ad)
	if err != nil || string(got) != "secret" {
		t.Fatalf("Open = %q, %v; want \"secret\"", got, err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s has mode %#o, want %#o", path, got, want)
	}
}

func TestLoadOrCreateKEKRefusesOpenPermissions(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr []string
	}{
		{
			name: "key file readable by group",
			setup: func(t *testing.T, dir string) {
				chmod(t, filepath.Join(dir, ca.KEKFileName), 0o640)
			},
			wantErr: []string{"chmod 600", ca.KEKFileName},
		},
		{
			name: "key file readable by everyone",
			setup: func(t *testing.T, dir string) {
				chmod(t, filepath.Join(dir, ca.KEKFileName), 0o644)
			},
			wantErr: []string{"chmod 600"},
		},
		{
			name: "keys directory open to others",
			setup: func(t *testing.T, dir string) {
				chmod(t, dir, 0o755)
			},
			wantErr: []string{"chmod 700"},
		},
		{
			name: "truncated key file",
			setup: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, ca.KEKFileName), []byte("short"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"not 32 bytes"},
		},
		{
			name: "key file too long",
			setup: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, ca.KEKFileName), make([]byte, 33), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"not 32 bytes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			if _, err := ca.LoadOrCreateKEK(dir); err != nil {
				t.Fatalf("creating: %v", err)
			}
			tt.setup(t, dir)
			_, err := ca.LoadOrCreateKEK(dir)
			if err == nil {
				t.Fatal("LoadOrCreateKEK succeeded, want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestKEKOpenRejectsTamperingAndOtherContext(t *testing.T) {
	kek, err := ca.LoadOrCreateKEK(t.TempDir() + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.LoadOrCreateKEK(t.TempDir() + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := kek.Seal([]byte("private key"), []byte("spiffe/1"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1

	cases := map[string]func() ([]byte, error){
		"other additional data": func() ([]byte, error) { return kek.Open(sealed, []byte("host/1")) },
		"flipped bit":           func() ([]byte, error) { return kek.Open(flipped, []byte("spiffe/1")) },
		"truncated":             func() ([]byte, error) { return kek.Open(sealed[:10], []byte("spiffe/1")) },
		"other key":             func() ([]byte, error) { return other.Open(sealed, []byte("spiffe/1")) },
	}
	for name, open := range cases {
		if got, err := open(); err == nil {
			t.Errorf("%s: Open = %q, want an error", name, got)
		}
	}
}
