//go:build !linux

package attest

import (
	"context"
	"errors"
	"fmt"
)

// Without /proc nothing more is known: Peer.StartTime and Peer.Exe stay zero.
func handshakeProcess(int32) (connectInfo, error) { return connectInfo{}, nil }

func (u *Unix) attest(_ context.Context, p Peer) (Result, error) {
	return Result{}, fmt.Errorf("attesting process %d: unix attestation needs /proc (Linux)", p.PID)
}

func readCgroups(string, Peer) (Cgroups, error) {
	return nil, errors.New("reading cgroups needs /proc (Linux)")
}
