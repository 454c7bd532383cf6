package rbac

import (
	"testing"

	"github.com/wid-project/wid/internal/core/resource"
)

func selectorRole(name string, allow, deny map[string][]string) *resource.Role {
	r := &resource.Role{
		Header: resource.Header{Kind: resource.KindRole, Version: resource.V1, Metadata: resource.Metadata{Name: name}},
		Spec: resource.RoleSpec{
			Allow: resource.RoleConditions{WorkloadIdentityLabels: allow},
			Deny:  resource.RoleConditions{WorkloadIdentityLabels: deny},
		},
	}
	if err := r.Validate(); err != nil {
		panic(err)
	}
	return r
}

func TestSelectsWorkloadIdentity(t *testing.T) {
	prod := selectorRole("prod", map[string][]string{"env": {"prod", "staging"}}, nil)
	prodWeb := selectorRole("prod-web", map[string][]string{"env": {"prod"}, "app": {"web"}}, nil)
	anyEnv := selectorRole("any-env", map[string][]string{"env": {"*"}}, nil)
	everything := selectorRole("everything", map[string][]string{"*": {"*"}}, nil)
	everythingButDB := selectorRole("no-db", map[string][]string{"*": {"*"}}, map[string][]string{"app": {"db"}})
	starAndEnv := selectorRole("star-and-env", map[string][]string{"*": {"*"}, "env": {"prod"}}, nil)
	noSelector := selectorRole("none", nil, nil)
	denyProd := selectorRole("deny-prod", nil, map[string][]string{"env": {"prod"}})
	denyAll := selectorRole("deny-all", nil, map[string][]string{"*": {"*"}})

	tests := []struct {
		name   string
		roles  []*resource.Role
		labels map[string]string
		want   bool
	}{
		{"no roles", nil, map[string]string{"env": "prod"}, false},
		{"value listed", []*resource.Role{prod}, map[string]string{"env": "prod", "app": "web"}, true},
		{"other listed value", []*resource.Role{prod}, map[string]string{"env": "staging"}, true},
		{"value not listed", []*resource.Role{prod}, map[string]string{"env": "dev"}, false},
		{"label missing", []*resource.Role{prod}, map[string]string{"app": "web"}, false},
		{"no labels", []*resource.Role{prod}, nil, false},
		{"every key must hold", []*resource.Role{prodWeb}, map[string]string{"env": "prod", "app": "db"}, false},
		{"every key holds", []*resource.Role{prodWeb}, map[string]string{"env": "prod", "app": "web"}, true},
		{"any value", []*resource.Role{anyEnv}, map[string]string{"env": "whatever"}, true},
		{"any value needs the label", []*resource.Role{anyEnv}, map[string]string{"app": "web"}, false},
		{"match all", []*resource.Role{everything}, nil, true},
		{"match all with labels", []*resource.Role{everything}, map[string]string{"env": "prod"}, true},
		{"star and a key", []*resource.Role{starAndEnv}, map[string]string{"env": "dev"}, false},
		{"no selector selects nothing", []*resource.Role{noSelector}, map[string]string{"env": "prod"}, false},
		{"any role may select", []*resource.Role{noSelector, prod}, map[string]string{"env": "prod"}, true},
		{"deny selector excludes", []*resource.Role{everythingButDB}, map[string]string{"app": "db"}, false},
		{"deny selector leaves others", []*resource.Role{everythingButDB}, map[string]string{"app": "web"}, true},
		{"deny in another role beats allow", []*resource.Role{everything, denyProd}, map[string]string{"env": "prod"}, false},
		{"deny in an earlier role beats allow", []*resource.Role{denyProd, everything}, map[string]string{"env": "prod"}, false},
		{"deny does not match", []*resource.Role{everything, denyProd}, map[string]string{"env": "dev"}, true},
		{"deny all", []*resource.Role{everything, denyAll}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SelectsWorkloadIdentity(tt.roles, tt.labels); got != tt.want {
				t.Errorf("SelectsWorkloadIdentity(%v) = %v, want %v", tt.labels, got, tt.want)
			}
		})
	}
}
