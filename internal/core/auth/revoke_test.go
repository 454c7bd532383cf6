package auth_test

import (
	"context"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth/authtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Refusals of a revocation say what is wrong and
// name the next step, which widctl words; the messages name no command.
func TestRevokeAndCRLRefusalsNameNextStep(t *testing.T) {
	srv := authtest.Start(t)
	ctx := context.Background()
	admin := srv.AdminClient(t)
	for _, tc := range []struct {
		serial, msg, next string
		code              codes.Code
	}{
		{"zz", `"zz" is not a certificate serial`, authv1.NextSerialHex, codes.InvalidArgument},
		{"0x0A", "no unexpired X509-SVID with serial 0000000000000000000000000000000a was issued", authv1.NextCheckSerial, codes.NotFound},
	} {
		_, err := admin.RevokeX509SVID(ctx, &authv1.RevokeX509SVIDRequest{Serial: tc.serial, Reason: "test"})
		if status.Code(err) != tc.code || status.Convert(err).Message() != tc.msg {
			t.Fatalf("revoking %q = %v, want %v saying %q", tc.serial, err, tc.code, tc.msg)
		}
		wantNext(t, err, tc.next, "")
	}

}
