package resource

import (
	"slices"
	"testing"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in       string
		wantErr  string
		wantAttr []string
	}{
		{in: "/svc/web"},
		{in: "/uid/{{ workload.unix.uid }}", wantAttr: []string{"workload.unix.uid"}},
		{in: "/ns/{{workload.kubernetes.namespace}}/sa-{{ workload.kubernetes.service_account }}/{{ workload.kubernetes.namespace }}",
			wantAttr: []string{"workload.kubernetes.namespace", "workload.kubernetes.service_account"}},
		{in: "/x/{{ workload.unix.uid", wantErr: `has "{{" without a closing "}}"`},
		{in: "/x/}}", wantErr: `has "}}" without a matching "{{"`},
		{in: "/x/{{ unix.uid }}", wantErr: `attribute "unix.uid" is not a workload attribute`},
		{in: "/x/{{ workload.Unix.uid }}", wantErr: "is not a workload attribute"},
		{in: "/x/{{ }}", wantErr: `attribute "" is not a workload attribute`},
		{in: "/x/{{ workload..uid }}", wantErr: "is not a workload attribute"},
		{in: "/x/{{ workload. }}", wantErr: "is not a workload attribute"},
		{in: "/x/{{ workload }}", wantErr: "is not a workload attribute"},
		{in: "/x/{{ {{ workload.a }} }}", wantErr: "placeholder inside a placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			tmpl, err := ParseTemplate(tt.in)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if got := tmpl.Attributes(); !slices.Equal(got, tt.wantAttr) {
				t.Errorf("Attributes() = %v, want %v", got, tt.wantAttr)
			}
			if tmpl.String() != tt.in {
				t.Errorf("String() = %q, want %q", tmpl.String(), tt.in)
			}
		})
	}
}

func TestTemplateRenderPath(t *testing.T) {
	tmpl, err := ParseTemplate("/ns/{{ workload.k8s.namespace }}/uid-{{ workload.unix.uid }}")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		attrs   map[string]string
		want    string
		wantErr string
	}{
		{attrs: map[string]string{"workload.k8s.namespace": "prod", "workload.unix.uid": "1000"}, want: "/ns/prod/uid-1000"},
		{attrs: map[string]string{"workload.unix.uid": "1000"}, wantErr: "attribute workload.k8s.namespace is not set for this workload"},
		// An empty value would drop a whole segment and change the ID's meaning.
		{attrs: map[string]string{"workload.k8s.namespace": "", "workload.unix.uid": "1000"}, wantErr: "is not set"},
		// A value must never add segments.
		{attrs: map[string]string{"workload.k8s.namespace": "prod/admin", "workload.unix.uid": "1000"}, wantErr: `contains "/"`},
		{attrs: map[string]string{"workload.k8s.namespace": "..", "workload.unix.uid": "1000"}, wantErr: `has a ".." segment`},
		{attrs: map[string]string{"workload.k8s.namespace": "a%b", "workload.unix.uid": "1000"}, wantErr: "percent-encoding"},
	}
	for _, tt := range tests {
		got, err := tmpl.RenderPath(tt.attrs)
		checkErr(t, err, tt.wantErr)
		if err == nil && got != tt.want {
			t.Errorf("RenderPath(%v) = %q, want %q", tt.attrs, got, tt.want)
		}
	}
}

func TestTemplateRenderDNSSAN(t *testing.T) {
	tmpl, err := ParseTemplate("{{ workload.k8s.namespace }}.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.RenderDNSSAN(map[string]string{"workload.k8s.namespace": "prod"})
	if err != nil || got != "prod.svc.cluster.local" {
		t.Errorf("RenderDNSSAN = %q, %v; want prod.svc.cluster.local", got, err)
	}
	_, err = tmpl.RenderDNSSAN(map[string]string{"workload.k8s.namespace": "bad_ns"})
	checkErr(t, err, `has the character '_'`)
}
