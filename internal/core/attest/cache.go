package attest

import (
	"container/list"
	"errors"
	"os/user"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// fileKey names one version of one file: a binary replaced by rename gets a
// new inode, one rewritten in place a new ctime (which no caller can set).
type fileKey struct {
	dev, ino     uint64
	mtime, ctime int64 // nanoseconds since the epoch
	size         int64
}

func (k fileKey) String() string {
	b := make([]byte, 0, 96)
	b = strconv.AppendUint(b, k.dev, 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, k.ino, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, k.mtime, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, k.ctime, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, k.size, 10)
	return string(b)
}

// hashCache is a bounded LRU of executable digests. Concurrent misses for
// the same file share one hashing.
type hashCache struct {
	max    int
	flight singleflight.Group

	mu      sync.Mutex
	entries map[fileKey]*list.Element
	lru     list.List // of *hashEntry, most recent first
}

type hashEntry struct {
	key fileKey
	sum string
}

func newHashCache(max int) *hashCache {
	return &hashCache{max: max, entries: make(map[fileKey]*list.Element, max)}
}

func (c *hashCache) get(k fileKey) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return "", false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*hashEntry).sum, true
}

func (c *hashCache) put(k fileKey, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		c.lru.MoveToFront(e)
		return
	}
	for c.lru.Len() >= c.max {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*hashEntry).key)
	}
	c.entries[k] = c.lru.PushFront(&hashEntry{key: k, sum: sum})
}

func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// nameCache maps uids or gids to names for a short while: the lookup may go
// to NSS (LDAP, sssd) and every Workload API call needs it.
type nameCache struct {
	max    int
	lookup func(id uint32) (name string, err error)
	now    func() time.Time
	flight singleflight.Group

	mu      sync.Mutex
	entries map[uint32]nameEntry
}

type nameEntry struct {
	name    string // "" when there is no such id
	expires time.Time
}

func newNameCache(max int, lookup func(uint32) (string, error)) *nameCache {
	return &nameCache{max: max, lookup: lookup, now: time.Now, entries: make(map[uint32]nameEntry)}
}

// errUnknownID is what a lookup returns for an id with no name.
var errUnknownID = errors.New("no such id")

// get returns the name of id, "" when it has none. err is a failed lookup,
// which is also cached, briefly, so that a broken NSS does not slow every call.
func (c *nameCache) get(id uint32) (string, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[id]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.name, nil
	}
	v, err, _ := c.flight.Do(strconv.FormatUint(uint64(id), 10), func() (any, error) {
		name, err := c.lookup(id)
		ttl := nameTTL
		switch {
		case errors.Is(err, errUnknownID):
			name, err = "", nil
		case err != nil:
			name, ttl = "", nameErrTTL
		}
		c.store(id, nameEntry{name: name, expires: c.now().Add(ttl)})
		return name, err
	})
	return v.(string), err
}

func (c *nameCache) store(id uint32, e nameEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[id]; !ok && len(c.entries) >= c.max {
		now := c.now()
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		// All fresh: drop one at random (map order) rather than grow.
		for k := range c.entries {
			if len(c.entries) < c.max {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[id] = e
}

func lookupUser(uid uint32) (string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		var unknown user.UnknownUserIdError
		if errors.As(err, &unknown) {
			return "", errUnknownID
		}
		return "", err
	}
	return u.Username, nil
}

func lookupGroup(gid uint32) (string, error) {
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	if err != nil {
		var unknown user.UnknownGroupIdError
		if errors.As(err, &unknown) {
			return "", errUnknownID
		}
		return "", err
	}
	return g.Name, nil
}
