package auth

import (
	"testing"
	"unicode/utf8"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"google.golang.org/protobuf/proto"
)

// FuzzLoginRequest runs an anonymous Login's decoding path on arbitrary
// bytes: the wire decoding, the size limits and the field checks that run
// before anything is looked up or hashed. Whatever passes must be within
// every bound.
func FuzzLoginRequest(f *testing.F) {
	seed, _ := proto.Marshal(&authv1.LoginRequest{User: "alice", Password: "correct horse battery", Invite: "00ff", TotpCode: "123456", TtlSeconds: 3600, Csr: []byte{0x30, 0x03}})
	f.Add(seed)
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv1.LoginRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		if requestLimits.Check(&req) != nil {
			return
		}
		if len(req.Password) > login.MaxPasswordLength || len(req.Invite) > maxSecret || len(req.Csr) > maxBytesField {
			t.Fatalf("limits passed an oversized request: %d-byte password, %d-byte invite, %d-byte CSR", len(req.Password), len(req.Invite), len(req.Csr))
		}
		pub, reason, err := validateLogin(&req)
		if err != nil {
			if reason == "" || len(reason) > 1024 {
				t.Fatalf("refusal %v has audit reason of %d bytes", err, len(reason))
			}
			return
		}
		if pub == nil || resource.ValidateName(req.User) != nil || req.Password == "" || req.TtlSeconds < 0 || !utf8.ValidString(req.User) {
			t.Fatalf("accepted an invalid login request: %+v", &req)
		}
	})
}

// FuzzJoinRequest runs an anonymous Join's size limits on arbitrary bytes:
// whatever passes may go into an audit event, so it must be small.
func FuzzJoinRequest(f *testing.F) {
	seed, _ := proto.Marshal(&authv1.JoinRequest{Token: "abcd", Host: "node-1", JoinMethod: "token", Csr: []byte{0x30, 0x03}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv1.JoinRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		if requestLimits.Check(&req) != nil {
			return
		}
		if len(req.Host) > maxHostLength || len(req.JoinMethod) > 64 || len(req.Token) > maxServiceAccountToken ||
			len(req.ServiceAccountToken) > maxServiceAccountToken || len(req.Csr) > maxBytesField ||
			len(req.X509Chain) > 8 || len(req.Challenge) > 40 || len(req.ChallengeSignature) > 1024 {
			t.Fatalf("limits passed an oversized join request")
		}
	})
}
