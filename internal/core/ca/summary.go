package ca

import "time"

// Summary describes one CA for listings (`widctl ca ls`). It holds no
// private material.
type Summary struct {
	Type     Type
	Phase    Phase
	Mode     Mode
	Sequence int64
	Keys     []KeySummary
}

// KeySummary describes one key set of a CA.
type KeySummary struct {
	ID        string
	State     KeyState
	Algorithm Algorithm
	KID       string
	// Fingerprint is "sha256:" and the hex SHA-256 of the public key's SPKI.
	Fingerprint string
	NotBefore   time.Time
	NotAfter    time.Time
}

// Summaries describes every CA, in the order of Types; nil before Init.
func (m *Manager) Summaries() []Summary {
	s := m.state.Load()
	if s == nil {
		return nil
	}
	out := make([]Summary, len(s.summaries))
	for i, sum := range s.summaries {
		out[i] = sum
		out[i].Keys = append([]KeySummary(nil), sum.Keys...)
	}
	return out
}

func summarize(cas map[Type]*authority) []Summary {
	out := make([]Summary, 0, len(Types))
	for _, t := range Types {
		a := cas[t]
		sum := Summary{Type: t, Phase: a.doc.Phase, Mode: a.doc.Mode, Sequence: a.doc.Sequence}
		// From the document rather than the decrypted key sets, so retired
		// keys are listed too.
		for _, d := range a.doc.KeySets {
			sum.Keys = append(sum.Keys, KeySummary{
				ID:          d.ID,
				State:       d.State,
				Algorithm:   d.Algorithm,
				KID:         d.KID,
				Fingerprint: Fingerprint(d.PublicKey),
				NotBefore:   d.NotBefore,
				NotAfter:    d.NotAfter,
			})
		}
		out = append(out, sum)
	}
	return out
}
