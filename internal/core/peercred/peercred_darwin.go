package peercred

import "golang.org/x/sys/unix"

func fromFD(fd int) (Info, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return Info{}, err
	}
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	if err != nil {
		return Info{}, err
	}
	info := Info{PID: int32(pid), UID: cred.Uid}
	if cred.Ngroups > 0 {
		info.GID = cred.Groups[0]
	}
	return info, nil
}
