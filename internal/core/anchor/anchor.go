// Package anchor keeps what a trust domain is outside its store: the trust
// domain's name, the IDs of its CA key sets and the audit log's head,
// sealed with the key encryption key in <data-dir>/keys/anchor.
//
// A store can lose its newest writes (a damaged WAL after a crash), its CA
// rows, or everything, and still open as a valid SQLite database; without
// an outside record the auth service would take that for a new trust
// domain and mint new CAs, silently breaking every workload. The anchor is
// that record: a store that disagrees with it is refused, never "repaired".
//
// The anchor may lag the store (it is written after the store commits), so
// a store whose audit chain extends the anchored head is accepted; it must
// never lead it.
package anchor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// FileName is the anchor's file inside the keys directory, next to the key
// encryption key that seals it.
const FileName = "anchor"

// magic starts the file, so a person (or file(1)) can tell what it is.
const magic = "wid anchor v1\n"

// additionalData binds the sealed bytes to their purpose: a sealed CA key
// copied over the anchor does not open as one.
var additionalData = []byte("wid anchor v1")

// maxSize bounds what Read accepts; a real anchor is a few KB.
const maxSize = 1 << 20

// Sealer encrypts and authenticates the anchor (ca.KEK does).
type Sealer interface {
	Seal(plaintext, additionalData []byte) ([]byte, error)
	Open(ciphertext, additionalData []byte) ([]byte, error)
}

// Anchor is what the data dir's store must agree with.
type Anchor struct {
	TrustDomain string `json:"trust_domain"`
	// CAKeys holds, per CA type, the IDs of the CA's key sets that are not
	// retired. An ID is derived from the key, so it names the key.
	CAKeys map[string][]string `json:"ca_keys"`
	// AuditSeq and AuditHash are the audit log's head when the anchor was
	// written: the store's chain must contain this event.
	AuditSeq  int64     `json:"audit_seq"`
	AuditHash string    `json:"audit_hash"`
	Written   time.Time `json:"written"`
}

// Path is the anchor's path in keysDir.
func Path(keysDir string) string { return filepath.Join(keysDir, FileName) }

// Read opens the anchor in keysDir. A missing anchor is an error that
// matches fs.ErrNotExist.
func Read(keysDir string, s Sealer) (Anchor, error) {
	path := Path(keysDir)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Anchor{}, err
		}
		return Anchor{}, fmt.Errorf("opening the trust domain's anchor %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, maxSize+1)
	n, err := f.Read(buf)
	if err != nil {
		return Anchor{}, fmt.Errorf("reading the trust domain's anchor %s: %w", path, err)
	}
	sealed, ok := bytes.CutPrefix(buf[:n], []byte(magic))
	if !ok || n > maxSize {
		return Anchor{}, fmt.Errorf("%s is not a wid anchor: restore keys/ from the backup that goes with wid.db", path)
	}
	plain, err := s.Open(sealed, additionalData)
	if err != nil {
		return Anchor{}, fmt.Errorf("the trust domain's anchor %s does not open with the key encryption key next to it: restore keys/ from one backup, not from two", path)
	}
	var a Anchor
	if err := json.Unmarshal(plain, &a); err != nil {
		return Anchor{}, fmt.Errorf("the trust domain's anchor %s is unreadable: %w", path, err)
	}
	return a, nil
}

// Write replaces the anchor in keysDir atomically (a temporary file,
// synced, renamed over the old one, and the directory synced): a crash
// leaves either the old anchor or the new one, never half of one.
func Write(keysDir string, s Sealer, a Anchor) error {
	plain, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encoding the trust domain's anchor: %w", err)
	}
	sealed, err := s.Seal(plain, additionalData)
	if err != nil {
		return fmt.Errorf("sealing the trust domain's anchor: %w", err)
	}
	tmp, err := os.CreateTemp(keysDir, ".anchor-*")
	if err != nil {
		return fmt.Errorf("writing the trust domain's anchor in %s: %w", keysDir, err)
	}
	tmpPath := tmp.Name()
	defer os.Remove(tmpPath) // fails harmlessly once renamed
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(append([]byte(magic), sealed...))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmpPath, Path(keysDir))
	}
	if err != nil {
		return fmt.Errorf("writing the trust domain's anchor %s: %w", Path(keysDir), err)
	}
	if d, err := os.Open(keysDir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("writing the trust domain's anchor %s: %w", Path(keysDir), err)
		}
	}
	return nil
}

// State is what a store holds, as Check compares it with the anchor.
type State struct {
	TrustDomain string
	CAKeys      map[string][]string
	// AuditSeq is the store's audit head.
	AuditSeq int64
	// HashAt returns the stored hash of audit event seq, and false when
	// the store has no such event.
	HashAt func(seq int64) (string, bool, error)
	// RotatedAfter, when set, returns the CA types that the audit log
	// records rotation steps of after event seq, having checked that the
	// log links up unbroken from that event to the head. Several auth
	// replicas share one store, each with its own anchor: the others may
	// rotate a CA right through (leaving none of the keys a stopped
	// replica anchored), and the log that extends its anchored event says so.
	RotatedAfter func(seq int64) (map[string]bool, error)
}

// Check says how the store's state disagrees with the anchor, in one
// clause a sentence can carry ("the store's audit log ends at event 7 but
// the anchor recorded event 9"), or returns nil when it agrees.
//
// Each CA must share at least one key set with the anchor: every rotation
// step keeps one key set from the step before, so a store one step ahead of
// or behind its anchor (a crash between the commit and the anchor's
// update) still agrees, while CAs made anew share nothing.
func (a Anchor) Check(s State) error {
	if s.TrustDomain != a.TrustDomain {
		return fmt.Errorf("the store holds trust domain %q but the anchor records %q", s.TrustDomain, a.TrustDomain)
	}
	// CAs that share no key with the anchor; held back until the audit
	// log is known to extend the anchored event, which may explain them.
	var replaced []string
	var replacedErr error
	for _, t := range sortedKeys(a.CAKeys) {
		anchored := a.CAKeys[t]
		stored := s.CAKeys[t]
		if len(stored) == 0 {
			return fmt.Errorf("the store has no %s CA but the anchor records one", t)
		}
		if !slices.ContainsFunc(stored, func(id string) bool { return slices.Contains(anchored, id) }) {
			replaced = append(replaced, t)
			if replacedErr == nil {
				replacedErr = fmt.Errorf("the store's %s CA has keys %s but the anchor records %s: its CAs were replaced", t, strings.Join(stored, ", "), strings.Join(anchored, ", "))
			}
		}
	}
	if a.AuditSeq == 0 {
		return replacedErr
	}
	if err := a.checkAudit(s); err != nil {
		// CAs made anew say more than the log they came with.
		if replacedErr != nil {
			return replacedErr
		}
		return err
	}
	if len(replaced) == 0 {
		return nil
	}
	if s.RotatedAfter == nil || s.AuditSeq == a.AuditSeq {
		return replacedErr
	}
	rotated, err := s.RotatedAfter(a.AuditSeq)
	if err != nil {
		return fmt.Errorf("reading the audit log after event %d to explain the CAs' new keys: %w", a.AuditSeq, err)
	}
	for _, t := range replaced {
		if !rotated[t] {
			return replacedErr
		}
	}
	return nil
}

// checkAudit says how the store's audit log fails to contain the anchored event.
func (a Anchor) checkAudit(s State) error {
	if s.AuditSeq < a.AuditSeq {
		return fmt.Errorf("the store's audit log ends at event %d but the anchor recorded event %d: the store lost its newest changes", s.AuditSeq, a.AuditSeq)
	}
	hash, ok, err := s.HashAt(a.AuditSeq)
	if err != nil {
		return fmt.Errorf("reading audit event %d to compare with the anchor: %w", a.AuditSeq, err)
	}
	if !ok {
		return fmt.Errorf("the store's audit log has no event %d, which the anchor recorded: the store lost changes", a.AuditSeq)
	}
	if hash != a.AuditHash {
		return fmt.Errorf("the store's audit event %d is not the one the anchor recorded: the store's history was replaced", a.AuditSeq)
	}
	return nil
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
