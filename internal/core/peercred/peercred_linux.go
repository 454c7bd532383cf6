package peercred

import "golang.org/x/sys/unix"

func fromFD(fd int) (Info, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Info{}, err
	}
	return Info{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
