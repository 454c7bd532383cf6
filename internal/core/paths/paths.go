// Package paths says where wid keeps things by default, so that widagent
// and widctl agree without configuration.
package paths

import (
	"os"
	"path/filepath"
	"strconv"
)

// AdminSocketName is the admin socket's file name inside the data dir.
const AdminSocketName = "admin.sock"

// DataDirEnv names a data dir that replaces the default one for widagent
// and widctl alike.
const DataDirEnv = "WID_DATA_DIR"

// DefaultDataDir is $WID_DATA_DIR when set, else /var/lib/wid for root,
// else $XDG_DATA_HOME/wid (~/.local/share/wid).
func DefaultDataDir() string {
	if d := os.Getenv(DataDirEnv); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/wid"
	}
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "wid")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "wid")
	}
	return filepath.Join(os.TempDir(), "wid")
}

// AdminSocket is the admin socket of a data dir.
func AdminSocket(dataDir string) string { return filepath.Join(dataDir, AdminSocketName) }

// DefaultWorkloadSocket is /run/wid/workload.sock for root, else
// $XDG_RUNTIME_DIR/wid/workload.sock.
func DefaultWorkloadSocket() string {
	if os.Geteuid() != 0 {
		if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
			return filepath.Join(x, "wid", "workload.sock")
		}
		return filepath.Join(os.TempDir(), "wid-"+strconv.Itoa(os.Getuid()), "workload.sock")
	}
	return "/run/wid/workload.sock"
}
