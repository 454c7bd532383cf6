package bundle

import (
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
)

func TestExportFormat(t *testing.T) {
	for args, want := range map[string]string{"": "pem", "--format=JWKS": "jwks", "--format=pem": "pem", "--format=json": "jwks"} {
		f, _ := clitest.Factory(t)
		var got *ExportOptions
		cmd := NewCmdExport(f, func(o *ExportOptions) error { got = o; return nil })
		var a []string
		if args != "" {
			a = append(a, args)
		}
		cmd.SetArgs(append(a, "-o", "b.pem"))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		if got.Format != want || got.Output != "b.pem" {
			t.Errorf("%q: options = %+v, want format %s", args, got, want)
		}
	}
}
