package ca

import "crypto"

// EncodeJWKS encodes keys (by kid) as a JWKS whose keys all have use,
// sorted by kid: the same keys always give the same bytes, so a foreign
// bundle fetched again unchanged is not pushed to agents again.
func EncodeJWKS(keys map[string]crypto.PublicKey, use string) ([]byte, error) {
	return encodeJWKS(keys, use)
}
