package attest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sync/singleflight"
)

// Attribute names set by the systemd attestor.
const (
	AttrSystemdUnit  = "workload.systemd.unit"
	AttrSystemdSlice = "workload.systemd.slice"
	// For a process of a user's systemd (in user@<uid>.service): the unit
	// and slice within that user manager.
	AttrSystemdUserUnit  = "workload.systemd.user_unit"
	AttrSystemdUserSlice = "workload.systemd.user_slice"
)

// DefaultSystemBus is the D-Bus system bus's address.
const DefaultSystemBus = "unix:path=/run/dbus/system_bus_socket"

// SystemdOptions configures NewSystemd.
type SystemdOptions struct {
	// BusAddress is the D-Bus address of systemd; "" means the system bus.
	BusAddress string
	// CgroupOnly skips D-Bus: the unit and slice come from the cgroup
	// alone (where no D-Bus daemon runs, or the agent may not use it).
	CgroupOnly bool
	// Logger gets debug records only; nil discards them.
	Logger *slog.Logger
}

// Systemd attests processes of systemd units: the unit from the caller's
// cgroup, confirmed (and its slice read) over D-Bus. Safe for concurrent
// use; one D-Bus connection serves all callers.
type Systemd struct {
	address    string
	cgroupOnly bool
	log        *slog.Logger

	dial singleflight.Group

	mu    sync.Mutex
	conn  *dbus.Conn
	known map[systemdKey]systemdEntry
}

// systemdKey is one process instance in one unit: systemd's answer for it
// holds until the process is moved, which changes the unit in its cgroup.
type systemdKey struct {
	pid   int32
	start uint64
	unit  string
}

type systemdEntry struct {
	slice   string
	expires time.Time
}

// Bounds of the cache of systemd's answers: a process keeps its unit, but a
// unit's slice can be changed (systemctl set-property), so answers expire.
const (
	systemdCacheTTL  = 30 * time.Second
	systemdCacheSize = 4096
)

// NewSystemd returns a systemd attestor. It connects to D-Bus on first use.
func NewSystemd(opts SystemdOptions) *Systemd {
	s := &Systemd{address: cmp.Or(opts.BusAddress, DefaultSystemBus), cgroupOnly: opts.CgroupOnly, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Name is "systemd".
func (s *Systemd) Name() string { return "systemd" }

// Close closes the D-Bus connection.
func (s *Systemd) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// Attest returns workload.systemd.unit and .slice of p (and .user_unit and
// .user_slice for a process of a user manager). With D-Bus, systemd's
// GetUnitByPID must name the unit the cgroup names, and the slice is the
// unit's Slice property; a disagreement (the pid reused in between) is an
// error, never a mix.
func (s *Systemd) Attest(ctx context.Context, p Peer, cg Cgroups) (map[string]string, error) {
	u, err := cg.SystemdUnit()
	if err != nil {
		return nil, err
	}
	if !s.cgroupOnly {
		slice, err := s.slice(ctx, p, u.Unit)
		if err != nil {
			return nil, err
		}
		if slice != u.Slice {
			return nil, fmt.Errorf("systemd puts unit %s in slice %s, the caller's cgroup in %s: refusing to choose", u.Unit, clip([]byte(slice)), u.Slice)
		}
	}
	attrs := map[string]string{AttrSystemdUnit: u.Unit, AttrSystemdSlice: u.Slice}
	if u.UserUnit != "" {
		attrs[AttrSystemdUserUnit] = u.UserUnit
		attrs[AttrSystemdUserSlice] = u.UserSlice
	}
	return attrs, nil
}

// slice asks systemd about p, or remembers its answer for the same process
// instance (known by its start time) in the same unit.
func (s *Systemd) slice(ctx context.Context, p Peer, unit string) (string, error) {
	key := systemdKey{p.PID, p.StartTime, unit}
	if p.StartTime != 0 {
		s.mu.Lock()
		e, ok := s.known[key]
		s.mu.Unlock()
		if ok && time.Now().Before(e.expires) {
			return e.slice, nil
		}
	}
	slice, err := s.askSystemd(ctx, p.PID, unit)
	if err != nil || p.StartTime == 0 {
		return slice, err
	}
	s.mu.Lock()
	if s.known == nil || len(s.known) >= systemdCacheSize {
		s.known = map[systemdKey]systemdEntry{}
	}
	s.known[key] = systemdEntry{slice: slice, expires: time.Now().Add(systemdCacheTTL)}
	s.mu.Unlock()
	return slice, nil
}

// unitInterfaces names the D-Bus interface holding the Slice property of
// each kind of unit that has processes.
var unitInterfaces = map[string]string{
	".service": "org.freedesktop.systemd1.Service",
	".scope":   "org.freedesktop.systemd1.Scope",
	".socket":  "org.freedesktop.systemd1.Socket",
	".mount":   "org.freedesktop.systemd1.Mount",
	".swap":    "org.freedesktop.systemd1.Swap",
}

// askSystemd asks systemd for the unit of pid, checks that it is unit, and
// returns the unit's slice.
func (s *Systemd) askSystemd(ctx context.Context, pid int32, unit string) (string, error) {
	iface := unitInterfaces[unit[strings.LastIndexByte(unit, '.'):]]
	if iface == "" {
		return "", fmt.Errorf("unit %s has no slice", unit)
	}
	for attempt := 0; ; attempt++ {
		conn, err := s.connection(ctx)
		if err != nil {
			return "", err
		}
		slice, err := askUnit(ctx, conn, pid, unit, iface)
		if err == nil || attempt == 1 || ctx.Err() != nil || conn.Connected() {
			return slice, err
		}
		// The bus went away (dbus restarted): connect again once.
		s.drop(conn)
	}
}

func askUnit(ctx context.Context, conn *dbus.Conn, pid int32, unit, iface string) (string, error) {
	const dest = "org.freedesktop.systemd1"
	var path dbus.ObjectPath
	err := conn.Object(dest, "/org/freedesktop/systemd1").
		CallWithContext(ctx, "org.freedesktop.systemd1.Manager.GetUnitByPID", 0, uint32(pid)).Store(&path)
	if err != nil {
		return "", fmt.Errorf("asking systemd for the unit of process %d: %w", pid, dbusError(err))
	}
	obj := conn.Object(dest, path)
	var id, slice dbus.Variant
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, "org.freedesktop.systemd1.Unit", "Id").Store(&id); err != nil {
		return "", fmt.Errorf("asking systemd for the name of unit %s: %w", path, dbusError(err))
	}
	if got, ok := id.Value().(string); !ok || got != unit {
		return "", fmt.Errorf("systemd says process %d is in unit %s, its cgroup says %s: refusing to choose", pid, clip([]byte(fmt.Sprint(id.Value()))), unit)
	}
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, "Slice").Store(&slice); err != nil {
		return "", fmt.Errorf("asking systemd for the slice of unit %s: %w", unit, dbusError(err))
	}
	v, ok := slice.Value().(string)
	if !ok {
		return "", fmt.Errorf("systemd gave unit %s a slice of type %s", unit, slice.Signature())
	}
	return v, nil
}

// dbusError keeps the message of a D-Bus error reply, which says what went
// wrong (no such process, access denied) better than its name.
func dbusError(err error) error {
	var e dbus.Error
	if errors.As(err, &e) && len(e.Body) > 0 {
		if msg, ok := e.Body[0].(string); ok {
			return fmt.Errorf("%s (%s)", msg, e.Name)
		}
	}
	return err
}

// connection returns the D-Bus connection, connecting if there is none; a
// caller waits for a connection attempt no longer than its ctx.
func (s *Systemd) connection(ctx context.Context) (*dbus.Conn, error) {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn != nil && conn.Connected() {
		return conn, nil
	}
	ch := s.dial.DoChan("", func() (any, error) {
		conn, err := dbus.Connect(s.address)
		if err != nil {
			return nil, fmt.Errorf("connecting to D-Bus at %s: %w: set the systemd attestor's dbus_address, or cgroup_only: true", s.address, err)
		}
		s.mu.Lock()
		if s.conn != nil {
			_ = s.conn.Close()
		}
		s.conn = conn
		s.mu.Unlock()
		return conn, nil
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("connecting to D-Bus at %s: %w", s.address, context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*dbus.Conn), nil
	}
}

func (s *Systemd) drop(conn *dbus.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == conn {
		_ = conn.Close()
		s.conn = nil
	}
}
