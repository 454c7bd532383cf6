// Package ca holds the trust domain's certificate authorities: one per CA
// type, each with one or more key sets (several during a rotation), stored in
// the store as JSON documents whose private keys are sealed with a key
// encryption key (KEK) kept on local disk.
//
// The Manager keeps every CA decrypted in memory so that issuing never touches
// the store or the KEK. This package must never log, print or return private
// key material, and never write a key file readable by anyone but its owner.
package ca

import (
	"fmt"
	"slices"
	"strings"
)

// Type names a certificate authority. Each type has its own keys and rotates
// on its own.
type Type string

const (
	// TypeSPIFFE signs X509-SVIDs; its certificates are the X.509 authorities
	// of the trust domain's bundle.
	TypeSPIFFE Type = "spiffe"
	// TypeJWT signs JWT-SVIDs; its keys are the bundle's JWT authorities.
	TypeJWT Type = "jwt"
	// TypeWIT signs WIT-SVIDs.
	TypeWIT Type = "wit"
	// TypeUser signs wid's own client certificates (users and bots).
	TypeUser Type = "user"
	// TypeHost signs wid's own server certificates; its key is the CA pin.
	TypeHost Type = "host"
)

// Types lists every CA type in display order.
var Types = []Type{TypeSPIFFE, TypeJWT, TypeWIT, TypeUser, TypeHost}

// ParseType returns the CA type named by s.
func ParseType(s string) (Type, error) {
	if t := Type(strings.ToLower(strings.TrimSpace(s))); t.valid() {
		return t, nil
	}
	return "", fmt.Errorf("unknown CA type %q: use one of %s", s, typeList())
}

// HasCertificate reports whether the type's key sets carry an X.509 CA
// certificate. JWT and WIT keys are bare key pairs named by their kid.
func (t Type) HasCertificate() bool {
	return t == TypeSPIFFE || t == TypeUser || t == TypeHost
}

func (t Type) valid() bool { return slices.Contains(Types, t) }

func typeList() string {
	names := make([]string, len(Types))
	for i, t := range Types {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

// Phase is where a CA stands in a rotation. Outside a rotation it is
// PhaseStandby.
type Phase string

const (
	PhaseStandby       Phase = "standby"
	PhaseInit          Phase = "init"
	PhaseUpdateClients Phase = "update_clients"
	PhaseUpdateServers Phase = "update_servers"
	PhaseRollback      Phase = "rollback"
)

var phases = []Phase{PhaseStandby, PhaseInit, PhaseUpdateClients, PhaseUpdateServers, PhaseRollback}

// Mode says who advances a rotation: the operator (manual) or the auth
// service on a schedule (auto). A CA that never rotated is manual.
type Mode string

const (
	ModeManual Mode = "manual"
	ModeAuto   Mode = "auto"
)

// KeyState is the role of one key set within its CA.
type KeyState string

const (
	// KeyActive signs. Every CA has exactly one active key set, in every
	// phase, so that which key signs is never ambiguous.
	KeyActive KeyState = "active"
	// KeyAdditional does not sign but is trusted: it is in the bundle and the
	// CA's cert pool (new keys during init, old keys during update_*).
	KeyAdditional KeyState = "additional"
	// KeyRetired is neither trusted nor used; it is kept only for the record.
	KeyRetired KeyState = "retired"
)

// Algorithm names a key set's key algorithm.
type Algorithm string

// AlgorithmECDSAP256 is the default and, for now, the only generated algorithm.
const AlgorithmECDSAP256 Algorithm = "ECDSA-P256"
