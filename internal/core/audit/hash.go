package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/wid-project/wid/internal/core/store"
)

// hashDomain keeps these hashes from ever colliding with a hash of the same
// bytes made for another purpose, and names the encoding so it can change.
const hashDomain = "wid audit row v1"

// HashRow returns the hex SHA-256 of every column of r but Hash. Each field
// is written with its length in front, so no two different rows encode to
// the same bytes (moving a character from one column to the next changes
// the hash), and editing any column changes the hash.
func HashRow(r store.AuditRow) string {
	h := sha256.New()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(hashDomain))
	field(strconv.AppendInt(nil, r.Seq, 10))
	field([]byte(r.Time.UTC().Format(time.RFC3339Nano)))
	field([]byte(r.Type))
	field([]byte(r.Actor))
	field([]byte(r.SPIFFEID))
	field([]byte(r.Outcome))
	field(r.Data)
	field([]byte(r.PrevHash))
	return hex.EncodeToString(h.Sum(nil))
}
