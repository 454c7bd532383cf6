package federation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/core/resource"
)

func parse(t *testing.T, args ...string) (*CreateOptions, error) {
	t.Helper()
	f, _ := clitest.Factory(t)
	var got *CreateOptions
	cmd := NewCmdCreate(f, func(o *CreateOptions) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SetOut(new(strings.Builder))
	cmd.SetErr(new(strings.Builder))
	if err := cmd.Execute(); err != nil {
		return nil, err
	}
	return got, nil
}

const webDoc = `kind: trust_domain_federation
version: v1
metadata: {name: cloud.example}
spec:
  bundle_endpoint_url: https://bundle.cloud.example/
  profile: https_web
`

func TestCreateBuildsFederation(t *testing.T) {
	o, err := parse(t, "cloud.example", "--url", "https://bundle.cloud.example/", "--profile", "https_web", "--description", "the cloud")
	if err != nil {
		t.Fatal(err)
	}
	fed, err := o.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if fed.Metadata.Name != "cloud.example" || fed.Spec.Profile != resource.ProfileHTTPSWeb || fed.Spec.BundleEndpointURL != "https://bundle.cloud.example/" || fed.Metadata.Description != "the cloud" {
		t.Errorf("built %+v", fed)
	}

	file := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(file, []byte(webDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err = parse(t, "-f", file)
	if err != nil {
		t.Fatal(err)
	}
	if fed, err := o.Federation(); err != nil || fed.Metadata.Name != "cloud.example" {
		t.Errorf("from -f: %+v, %v", fed, err)
	}
}

// Each mistake is one sentence naming the flag to fix.
func TestCreateRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"partner.test", "--url", "http://p/", "--profile", "https_web"}, `--url "http://p/" is not an https URL`},
		{[]string{"partner.test", "--url", "https://p/", "--profile", "https"}, `--profile "https" is not a bundle endpoint profile`},
		{[]string{"partner.test", "--url", "https://p/", "--profile", "https_spiffe"}, "--bundle is missing"},
		{[]string{"partner.test", "--url", "https://p/", "--profile", "https_spiffe", "--bundle", "/nonexistent/b.json"}, "file /nonexistent/b.json does not exist"},
		{[]string{"Partner_Test", "--url", "https://p/", "--profile", "https_web"}, "TRUST_DOMAIN"},
	} {
		o, err := parse(t, c.args...)
		if err == nil {
			_, err = o.Federation()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
	if _, err := parse(t, "partner.test", "-f", "x.yaml"); err == nil {
		t.Error("a trust domain and -f were both accepted")
	}
}
