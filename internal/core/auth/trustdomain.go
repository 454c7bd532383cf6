package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/internal/core/anchor"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/store"
)

// metaAnchored is set in the store once its anchor exists, so that a
// missing anchor file is noticed rather than written afresh.
const metaAnchored = "anchored"

// restoreHint ends every refusal of a damaged data dir.
const restoreHint = "restore wid.db and keys/ together from one backup as docs/operations.md describes (starting anyway would make a new trust domain and break every workload's identity)"

// storeFile is the SQLite store's file name in the data dir.
const storeFile = "wid.db"

func (s *Server) keysDir() string { return filepath.Join(s.cfg.DataDir, "keys") }

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// checkDataDir refuses, before the store is opened (which would create an
// empty one), a data dir that has keys but no store.
func checkDataDir(dataDir, file string, init bool) error {
	if file == "" {
		// A database server: an empty one is caught when the store is read.
		return nil
	}
	keys := filepath.Join(dataDir, "keys")
	hasKEK, err := exists(filepath.Join(keys, ca.KEKFileName))
	if err != nil {
		return fmt.Errorf("checking the data dir %s: %w", dataDir, err)
	}
	hasAnchor, err := exists(anchor.Path(keys))
	if err != nil {
		return fmt.Errorf("checking the data dir %s: %w", dataDir, err)
	}
	hasStore, err := exists(file)
	if err != nil {
		return fmt.Errorf("checking the data dir %s: %w", dataDir, err)
	}
	if (hasKEK || hasAnchor) && !hasStore && !init {
		return fmt.Errorf("data dir %s has the keys of a trust domain (keys/) but no store (%s is missing): %s, or, to give that trust domain up, start with --init", dataDir, inDataDir(dataDir, file), restoreHint)
	}
	return nil
}

// openTrustDomain creates the trust domain in an empty data dir (or with
// Config.Init), or loads the one there after checking the store against
// its anchor. It sets s.td, s.cas and s.anchor.
//
// On a database server (a store that replicas share) a data dir without an
// anchor and without a key of its own joins the trust domain in the store
// as a new replica, when Config.KEKFile opens the store's CA keys: the key
// is what only the trust domain's replicas hold. From then on its anchor
// checks the store as any other data dir's does.
func (s *Server) openTrustDomain(ctx context.Context) (created bool, err error) {
	dir := s.cfg.DataDir
	hasLocalKEK, err := exists(filepath.Join(s.keysDir(), ca.KEKFileName))
	if err != nil {
		return false, fmt.Errorf("checking the data dir %s: %w", dir, err)
	}
	hasAnchor, err := exists(anchor.Path(s.keysDir()))
	if err != nil {
		return false, fmt.Errorf("checking the data dir %s: %w", dir, err)
	}
	var fileKEK *ca.KEK
	if s.cfg.KEKFile != "" {
		if fileKEK, err = ca.LoadKEKFile(s.cfg.KEKFile); err != nil {
			return false, err
		}
		if hasLocalKEK {
			local, err := ca.LoadKEK(s.keysDir())
			if err != nil {
				return false, fmt.Errorf("loading the CA key encryption key: %w", err)
			}
			if !local.SameAs(fileKEK) {
				return false, fmt.Errorf("data dir %s has its own key encryption key keys/%s, which is not the one in --kek-file %s: drop --kek-file, or use another --data-dir", dir, ca.KEKFileName, s.cfg.KEKFile)
			}
		}
	}
	stored, err := s.db.GetMeta(ctx, metaTrustDomain)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("reading the trust domain: %w", err)
	}
	empty, err := s.storeEmpty(ctx, stored)
	if err != nil {
		return false, err
	}
	switch {
	case empty && (s.cfg.Init || (!hasLocalKEK && !hasAnchor)):
		return true, s.createTrustDomain(ctx, fileKEK)
	case empty:
		what := "a trust domain"
		if a, err := s.readAnchor(fileKEK); err == nil {
			what = fmt.Sprintf("trust domain %q", a.TrustDomain)
		}
		return false, fmt.Errorf("data dir %s has the keys of %s (keys/) but its store %s is empty: %s, or, to give that trust domain up, start with --init", dir, what, s.storeName(), restoreHint)
	case s.cfg.Init:
		name := stored
		if name == "" {
			name = "a trust domain"
		}
		return false, fmt.Errorf("--init makes a new trust domain, but data dir %s already holds %s: start without --init, or use another --data-dir", dir, name)
	case !hasLocalKEK && fileKEK == nil && s.shared():
		return false, fmt.Errorf("the store holds trust domain %q, whose CA keys open only with the key encryption key of the replica that created it: pass --kek-file with a copy of that replica's keys/%s", stored, ca.KEKFileName)
	case !hasLocalKEK && fileKEK == nil:
		return false, fmt.Errorf("data dir %s holds a store but not the key encryption key keys/%s that opens its CA keys: %s", dir, ca.KEKFileName, restoreHint)
	}
	return false, s.loadTrustDomain(ctx, stored, hasAnchor, hasLocalKEK, fileKEK)
}

// shared reports whether the store is a database server, which several
// replicas of the auth service may share, rather than a file of this one.
func (s *Server) shared() bool { return s.cfg.StoreFile == "" }

// storeEmpty reports whether the store holds nothing of a trust domain.
func (s *Server) storeEmpty(ctx context.Context, td string) (bool, error) {
	if td != "" {
		return false, nil
	}
	cas, err := s.db.List(ctx, ca.StoreKind)
	if err != nil {
		return false, fmt.Errorf("reading the store: %w", err)
	}
	seq, _, err := s.db.AuditHead(ctx)
	if err != nil {
		return false, fmt.Errorf("reading the store: %w", err)
	}
	return len(cas) == 0 && seq == 0, nil
}

func (s *Server) createTrustDomain(ctx context.Context, fileKEK *ca.KEK) error {
	name := s.cfg.TrustDomain
	if name == "" {
		name = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return fmt.Errorf("trust domain %q is invalid: use lower-case letters, digits, dots, dashes and underscores, like example.org", name)
	}
	kek := fileKEK
	if kek == nil {
		if kek, err = ca.LoadOrCreateKEK(s.keysDir()); err != nil {
			return fmt.Errorf("loading the CA key encryption key: %w", err)
		}
	} else if err := os.MkdirAll(s.keysDir(), 0o700); err != nil {
		return fmt.Errorf("creating the keys directory %s: %w", s.keysDir(), err)
	}
	if err := s.db.PutMetaOnce(ctx, metaTrustDomain, td.Name()); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return errors.New("another replica created a trust domain in the store at the same moment: start this one again, and it will join that trust domain")
		}
		return fmt.Errorf("recording the trust domain: %w", err)
	}
	s.td = td
	s.kek = kek
	s.cas = ca.NewManager(s.db, kek, td, s.clock)
	s.cas.Subject = s.cfg.CASubject
	if _, err := s.cas.Init(ctx); err != nil {
		return fmt.Errorf("creating the trust domain's CAs: %w", err)
	}
	if err := s.res.ensureBuiltinRoles(ctx); err != nil {
		return err
	}
	return s.anchorNow(ctx, kek)
}

func (s *Server) readAnchor(kek *ca.KEK) (anchor.Anchor, error) {
	if kek == nil {
		var err error
		if kek, err = ca.LoadKEK(s.keysDir()); err != nil {
			return anchor.Anchor{}, err
		}
	}
	return anchor.Read(s.keysDir(), kek)
}

func (s *Server) loadTrustDomain(ctx context.Context, stored string, hasAnchor, hasLocalKEK bool, fileKEK *ca.KEK) error {
	dir := s.cfg.DataDir
	if stored == "" {
		return fmt.Errorf("the store in data dir %s has lost its trust domain's name: %s", dir, restoreHint)
	}
	if s.cfg.TrustDomain != "" && s.cfg.TrustDomain != stored {
		if s.shared() {
			return fmt.Errorf("the store holds trust domain %q, not %q: drop --trust-domain, or point --store at the database of %q", stored, s.cfg.TrustDomain, s.cfg.TrustDomain)
		}
		return fmt.Errorf("data dir %s holds trust domain %q, not %q: drop --trust-domain or use another --data-dir", dir, stored, s.cfg.TrustDomain)
	}
	td, err := spiffeid.TrustDomainFromString(stored)
	if err != nil {
		return fmt.Errorf("stored trust domain %q is invalid: %w", stored, err)
	}
	kek := fileKEK
	if kek == nil {
		if kek, err = ca.LoadKEK(s.keysDir()); err != nil {
			return fmt.Errorf("loading the CA key encryption key: %w", err)
		}
	}
	s.td = td
	s.kek = kek
	s.cas = ca.NewManager(s.db, kek, td, s.clock)
	s.cas.Subject = s.cfg.CASubject

	if s.shared() {
		// The key is checked against the store before anything else, so
		// that a wrong one is named as such, whatever else differs.
		if err := s.loadCAs(ctx); err != nil {
			if errors.Is(err, ca.ErrWrongKEK) {
				return fmt.Errorf("the key encryption key %s does not open the CA keys of trust domain %q in the store: give --kek-file a copy of keys/%s of the replica that created it", kekName(s.cfg.KEKFile, s.keysDir()), stored, ca.KEKFileName)
			}
			return err
		}
		if !hasAnchor && !hasLocalKEK {
			// A new replica: see openTrustDomain.
			if err := os.MkdirAll(s.keysDir(), 0o700); err != nil {
				return fmt.Errorf("creating the keys directory %s: %w", s.keysDir(), err)
			}
			s.log.Info("joined the trust domain in the shared store as a new replica", "trust_domain", stored, "anchor", anchor.Path(s.keysDir()))
			return s.anchorNow(ctx, kek)
		}
	}

	if !hasAnchor {
		marked, err := s.db.GetMeta(ctx, metaAnchored)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("reading the store: %w", err)
		}
		if marked != "" {
			return fmt.Errorf("data dir %s has lost keys/%s, the record its store is checked against: %s", dir, anchor.FileName, restoreHint)
		}
		// A data dir from before anchors: its store is all there is to
		// go by, so it is anchored as it stands, once its CAs load.
		if !s.shared() {
			if err := s.loadCAs(ctx); err != nil {
				return err
			}
		}
		s.log.Info("recorded the trust domain's anchor", "path", anchor.Path(s.keysDir()))
		return s.anchorNow(ctx, kek)
	}

	a, err := anchor.Read(s.keysDir(), kek)
	if err != nil {
		return err
	}
	keys, err := ca.StoredKeyIDs(ctx, s.db)
	if err != nil {
		return fmt.Errorf("reading the store's CAs: %w", err)
	}
	seq, _, err := s.db.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("reading the store's audit head: %w", err)
	}
	err = a.Check(anchor.State{TrustDomain: td.Name(), CAKeys: keys, AuditSeq: seq, HashAt: s.auditHashAt(ctx), RotatedAfter: s.rotatedAfter(ctx, seq)})
	if err != nil {
		return fmt.Errorf("the store in data dir %s does not match the trust domain's anchor (keys/%s): %v: %s", dir, anchor.FileName, err, restoreHint)
	}
	if !s.shared() {
		if err := s.loadCAs(ctx); err != nil {
			return err
		}
	}
	s.anchor = anchor.NewKeeper(s.keysDir(), kek, a, s.log)
	// The anchor may lag the store; bring it level before serving.
	s.anchor.SetCAKeys(s.cas.KeyIDs())
	head, hash, err := s.db.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("reading the store's audit head: %w", err)
	}
	s.anchor.SetAuditHead(head, hash)
	if err := s.anchor.Flush(); err != nil {
		return err
	}
	return s.db.PutMetaOnce(ctx, metaAnchored, "1")
}

func (s *Server) loadCAs(ctx context.Context) error {
	err := s.cas.Load(ctx)
	if errors.Is(err, ca.ErrNoCAs) {
		return fmt.Errorf("the store in data dir %s holds trust domain %q but none of its CAs: %s", s.cfg.DataDir, s.td.Name(), restoreHint)
	}
	if err != nil {
		return fmt.Errorf("loading the trust domain's CAs: %w", err)
	}
	return nil
}

// anchorNow writes the anchor from the store as it is and starts keeping it.
func (s *Server) anchorNow(ctx context.Context, kek *ca.KEK) error {
	seq, hash, err := s.db.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("reading the store's audit head: %w", err)
	}
	a := anchor.Anchor{TrustDomain: s.td.Name(), CAKeys: s.cas.KeyIDs(), AuditSeq: seq, AuditHash: hash, Written: s.clock().UTC()}
	if err := anchor.Write(s.keysDir(), kek, a); err != nil {
		return err
	}
	s.anchor = anchor.NewKeeper(s.keysDir(), kek, a, s.log)
	return s.db.PutMetaOnce(ctx, metaAnchored, "1")
}

// kekName names the key encryption key in use, for messages.
func kekName(file, keysDir string) string {
	if file != "" {
		return file
	}
	return filepath.Join(keysDir, ca.KEKFileName)
}

// errFound ends a scan once the row sought is read.
var errFound = errors.New("found")

// auditHashAt reads one stored audit event's hash.
func (s *Server) auditHashAt(ctx context.Context) func(int64) (string, bool, error) {
	return func(seq int64) (string, bool, error) {
		var hash string
		var ok bool
		err := s.db.ScanAudit(ctx, seq-1, func(r store.AuditRow) error {
			if r.Seq == seq {
				hash, ok = r.Hash, true
			}
			return errFound
		})
		if err != nil && !errors.Is(err, errFound) {
			return "", false, err
		}
		return hash, ok, nil
	}
}

// rotatedAfter returns the CA types whose rotation steps the audit log
// records after event from, up to event head, having checked that each
// event from there on hashes as recorded and follows the one before.
func (s *Server) rotatedAfter(ctx context.Context, head int64) func(int64) (map[string]bool, error) {
	return func(from int64) (map[string]bool, error) {
		prevHash, ok, err := s.auditHashAt(ctx)(from)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("the audit log has no event %d", from)
		}
		rotated := map[string]bool{}
		prevSeq := from
		err = s.db.ScanAudit(ctx, from, func(r store.AuditRow) error {
			if r.Seq > head {
				return errFound
			}
			if r.Seq != prevSeq+1 || r.PrevHash != prevHash || audit.HashRow(r) != r.Hash {
				return fmt.Errorf("audit event %d does not follow event %d as recorded", r.Seq, prevSeq)
			}
			prevSeq, prevHash = r.Seq, r.Hash
			if r.Type != audit.TypeCARotation || r.Outcome != audit.OutcomeSuccess {
				return nil
			}
			var ev audit.Event
			if err := json.Unmarshal(r.Data, &ev); err != nil {
				return fmt.Errorf("decoding audit event %d: %w", r.Seq, err)
			}
			rotated[ev.Details["ca_type"]] = true
			return nil
		})
		if err != nil && !errors.Is(err, errFound) {
			return nil, err
		}
		if prevSeq != head {
			return nil, fmt.Errorf("the audit log ends at event %d, not at its head %d", prevSeq, head)
		}
		return rotated, nil
	}
}

// inDataDir names file relative to the data dir when it lies inside it.
func inDataDir(dataDir, file string) string {
	if rel, err := filepath.Rel(dataDir, file); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return file
}

// storeName names the store for people: its file, or the database.
func (s *Server) storeName() string {
	if s.cfg.StoreFile == "" {
		return "(the database)"
	}
	return inDataDir(s.cfg.DataDir, s.cfg.StoreFile)
}
