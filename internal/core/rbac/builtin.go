package rbac

import "github.com/wid-project/wid/internal/core/resource"

// Names of the built-in roles.
const (
	RoleEditor     = "editor"
	RoleLocalAgent = "local-agent"
)

// BuiltinRoles returns the roles every trust domain starts with, freshly
// built so that callers may change their copies:
//
//   - editor: every admin rule and every SPIFFE path, with no SANs; for
//     administrators.
//   - local-agent: held by the agent that runs next to the auth service;
//     every workload identity and every SPIFFE path, and reading what an
//     agent needs (workload identities, roles, the bundle). An admin can
//     narrow it by editing the role.
func BuiltinRoles() []*resource.Role {
	return []*resource.Role{
		{
			Header: resource.Header{
				Kind:    resource.KindRole,
				Version: resource.V1,
				Metadata: resource.Metadata{
					Name:        RoleEditor,
					Description: "Every admin operation and every SPIFFE ID path.",
				},
			},
			Spec: resource.RoleSpec{
				Allow: resource.RoleConditions{
					SPIFFE: []resource.SPIFFEGrant{{Path: "/**"}},
					Rules:  []resource.Rule{{Resources: []string{resource.Wildcard}, Verbs: []string{resource.Wildcard}}},
				},
			},
		},
		{
			Header: resource.Header{
				Kind:    resource.KindRole,
				Version: resource.V1,
				Metadata: resource.Metadata{
					Name:        RoleLocalAgent,
					Description: "The agent co-located with the auth service: every workload identity of the trust domain.",
				},
			},
			Spec: resource.RoleSpec{
				Allow: resource.RoleConditions{
					SPIFFE: []resource.SPIFFEGrant{{Path: "/**"}},
					Rules: []resource.Rule{{
						Resources: []string{resource.KindWorkloadIdentity, resource.KindRole, resource.ResourceBundle},
						Verbs:     []string{resource.VerbRead, resource.VerbList},
					}},
					WorkloadIdentityLabels: map[string][]string{resource.Wildcard: {resource.Wildcard}},
				},
			},
		},
	}
}
