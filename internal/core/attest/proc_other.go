//go:build !linux

package attest

import (
	"context"
	"errors"
	"fmt"
)

// handshakeStartTime is unknown without /proc: Peer.StartTime stays 0.
func handshakeStartTime(int32) (uint64, error) { return 0, nil }

func (u *Unix) attest(_ context.Context, p Peer) (Result, error) {
	return Result{}, fmt.Errorf("attesting process %d: unix attestation needs /proc (Linux)", p.PID)
}

func readCgroups(string, Peer) (Cgroups, error) {
	return nil, errors.New("reading cgroups needs /proc (Linux)")
}
