package resource

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzDecode feeds arbitrary bytes to Decode. It must never panic, and
// whatever it accepts must survive MarshalYAML -> Decode and MarshalJSON ->
// Unmarshal unchanged: what `widctl get` prints must be what `widctl create
// -f` reads back.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		roleYAML,
		workloadIdentityYAML,
		userYAML,
		botYAML,
		tokenYAML,
		"# resources\n---\n" + roleYAML + "---\n" + userYAML + "---\n\n---\n" + workloadIdentityYAML,
		`{"kind":"role","version":"v1","metadata":{"name":"svc","description":"a\/b \ud83d\ude00"},"spec":{"allow":{"spiffe":[{"path":"/svc/*"}]}}}`,
		"kind: role\nversion: v1\nmetadata: {name: x}\nspec: {allow: {spiffe: [{path: /svc//x}]}}\n",
		"kind: user\nversion: v1\nmetadata: &m {name: a}\nspec: {roles: [*m]}\n",
		"kind: token\nversion: v1\nmetadata: {name: t}\nspec: {bot: b, method: token, uses: 1e3, used: 0, expires: 2030-01-02}\n",
		"kind: token\nversion: v1\nmetadata: {name: k}\nspec: {bot: b, method: kubernetes, kubernetes: {allow: [{service_account: \"wid:*\"}], issuer: https://i, jwks: '{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}]}'}}\n",
		"kind: token\nversion: v1\nmetadata: {name: k}\nspec: {bot: b, method: kubernetes, kubernetes: {allow: [{service_account: a:b}], token_review: true, cluster: main}}\n",
		"\x00\xff{[",
		"- a\n- b\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Decode(data)
		if err != nil {
			if rs != nil {
				t.Fatalf("Decode returned resources along with the error %v", err)
			}
			return
		}
		if err := knownFieldsDecode(data); err != nil {
			t.Fatalf("Decode accepted what yaml.v3 with KnownFields refuses: %v", err)
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Fatalf("Decode accepted an invalid resource: %v", err)
			}
			y, err := MarshalYAML(r)
			if err != nil {
				t.Fatalf("MarshalYAML: %v", err)
			}
			again, err := Decode(y)
			if err != nil {
				t.Fatalf("Decode(MarshalYAML(r)) = %v\n%s", err, y)
			}
			if len(again) != 1 || !reflect.DeepEqual(again[0], r) {
				t.Fatalf("YAML round trip changed the resource:\n got %#v\nwant %#v\n%s", again, r, y)
			}
			j, err := MarshalJSON(r)
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			back, err := Unmarshal(j)
			if err != nil {
				t.Fatalf("Unmarshal(MarshalJSON(r)) = %v\n%s", err, j)
			}
			if !reflect.DeepEqual(back, r) {
				t.Fatalf("JSON round trip changed the resource:\n got %#v\nwant %#v\n%s", back, r, j)
			}
		}
	})
}

// knownFieldsDecode decodes data the plain yaml.v3 way, with KnownFields on
// and each document into the type its kind names, so that the fuzzer checks
// Decode's own schema walk is at least as strict.
func knownFieldsDecode(data []byte) error {
	data = yamlSafeJSON(data)
	var kinds []string
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		kind := ""
		if len(n.Content) > 0 {
			if k := mappingValue(n.Content[0], "kind"); k != nil {
				kind = k.Value
			}
		}
		kinds = append(kinds, kind)
	}
	dec = yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for _, kind := range kinds {
		var target any = new(yaml.Node) // empty documents
		if kind != "" {
			r, err := New(kind)
			if err != nil {
				return err
			}
			target = r
		}
		if err := dec.Decode(target); err != nil {
			return err
		}
	}
	return nil
}
