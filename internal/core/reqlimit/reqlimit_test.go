package reqlimit_test

import (
	"errors"
	"strings"
	"testing"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/reqlimit"
	"google.golang.org/protobuf/proto"
)

func TestCheck(t *testing.T) {
	l := &reqlimit.Limits{String: 10, Bytes: 8, Items: 3, Fields: map[string]int{
		"wid.auth.v1.JoinRequest.host":                        4,
		"wid.auth.v1.Attestation.attributes.key":              5,
		"wid.auth.v1.RecordAttestationsRequest.attestations#": 2,
		"wid.auth.v1.Attestation.spiffe_ids":                  6,
	}}
	for name, tt := range map[string]struct {
		msg  proto.Message
		want string // "" for accepted
	}{
		"within":           {&authv1.JoinRequest{Host: "abcd", Token: "0123456789", Csr: make([]byte, 8)}, ""},
		"field override":   {&authv1.JoinRequest{Host: "abcde"}, "host is 5 bytes long, over the limit of 4 bytes"},
		"default string":   {&authv1.JoinRequest{Token: strings.Repeat("t", 11)}, "token is 11 bytes long, over the limit of 10 bytes"},
		"default bytes":    {&authv1.JoinRequest{Csr: make([]byte, 9)}, "csr is 9 bytes long, over the limit of 8 bytes"},
		"list count":       {&authv1.RecordAttestationsRequest{Attestations: make([]*authv1.Attestation, 3)}, "attestations is 3 items long, over the limit of 2 items"},
		"nested list item": {&authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{}, {SpiffeIds: []string{"ok", "1234567"}}}}, "attestations[1].spiffe_ids[1] is 7 bytes long, over the limit of 6 bytes"},
		"map key":          {&authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Attributes: map[string]string{"toolong": "v"}}}}, "attestations[0].attributes key is 7 bytes long, over the limit of 5 bytes"},
		"map value":        {&authv1.RecordAttestationsRequest{Attestations: []*authv1.Attestation{{Attributes: map[string]string{"k": strings.Repeat("v", 11)}}}}, `attestations[0].attributes["k"] is 11 bytes long, over the limit of 10 bytes`},
		"map count":        {&authv1.IssueWorkloadSVIDsRequest{Attributes: map[string]string{"a": "", "b": "", "c": "", "d": ""}}, "attributes is 4 items long, over the limit of 3 items"},
	} {
		t.Run(name, func(t *testing.T) {
			err := l.Check(tt.msg)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var le *reqlimit.Error
			if !errors.As(err, &le) || err.Error() != tt.want {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}
