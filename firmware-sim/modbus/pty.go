//go:build linux

package modbus

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenPTY opens a pseudo-terminal pair: the master, for the emulator, in
// non-blocking mode so its reads take deadlines (the inter-frame silence);
// and the path of the slave side, which a client opens as a serial port.
// hold is the slave side kept open by the emulator, so that the master
// does not read EIO while no client has the port open (a client
// reconnecting closes and reopens it); it is set to raw mode, as a serial
// port is.
func OpenPTY() (master, hold *os.File, path string, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, "", fmt.Errorf("open /dev/ptmx: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0) // unlockpt
	}
	if err != nil {
		unix.Close(fd)
		return nil, nil, "", fmt.Errorf("pty: %w", err)
	}
	path = fmt.Sprintf("/dev/pts/%d", n)
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	hold, err = os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, "", err
	}
	if err := rawMode(hold); err != nil {
		master.Close()
		hold.Close()
		return nil, nil, "", err
	}
	return master, hold, path, nil
}

// rawMode turns off echo, line editing and character translation (cfmakeraw).
func rawMode(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioctlErr error
	err = sc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if err != nil {
			ioctlErr = err
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		ioctlErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err != nil {
		return err
	}
	return ioctlErr
}
