// Command workloadapi measures a SPIFFE Workload API agent the way workloads
// see it, through go-spiffe's workloadapi client, and runs the same
// measurements against wid and SPIRE in one run so that the figures compare:
//
//   - first SVID: from starting the system on a fresh data dir to a
//     workload's first successful FetchX509SVID;
//   - FetchX509SVID rate and latency with N concurrent clients, each reusing
//     its own client (one connection), so the agent is measured, not dialing;
//   - new identity to a watching workload: from running the admin command
//     that creates an identity to WatchX509Context seeing its SPIFFE ID;
//   - bulk: from creating 1,000 identities for one workload in one admin
//     command to a FetchX509SVID response that carries all of them;
//   - agent RSS (VmRSS) with those SVIDs cached.
//
// Each system is started by a driver in ./system (SPIRE: spire-server and
// spire-agent; wid: widagent start and widctl), on loopback and temp unix
// sockets only, and stopped at the end.
//
//	go run ./bench/workloadapi                       # spire and wid
//	go run ./bench/workloadapi -system spire
//	go run ./bench/workloadapi -socket /tmp/w.sock   # only the load, against a running agent
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/wid-project/wid/bench/workloadapi/load"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/wid-project/wid/bench/workloadapi/system"
)

// agentSystem is one SPIFFE implementation under test, started on a fresh
// data dir, whose admin commands give the current uid identities.
type agentSystem interface {
	Name() string
	// Start starts every process on a fresh data dir and gives the current
	// uid UIDSPIFFEID(); it may return before the agent serves it.
	Start(ctx context.Context) error
	SocketPath() string
	UIDSPIFFEID() spiffeid.ID
	// CreateIdentity runs the admin command that gives the current uid
	// one more SPIFFE ID, named by name.
	CreateIdentity(ctx context.Context, name string) (spiffeid.ID, error)
	// CreateIdentities does the same for every name in one admin command.
	CreateIdentities(ctx context.Context, names []string) ([]spiffeid.ID, error)
	Processes() []system.Process
	// Running reports an error, with the process's log, if one has exited.
	Running() error
	Stop() error
	KeepDirs()
	Dir() string
}

type options struct {
	systems     []string
	socket      string
	spireBin    string
	widBin      string
	clients     int
	duration    time.Duration
	watchTrials int
	bulk        int
	keep        bool
}

func main() {
	var o options
	systems := flag.String("system", "spire,wid", "systems to measure, comma-separated: spire, wid")
	flag.StringVar(&o.socket, "socket", "", "measure only the FetchX509SVID load against the Workload API socket at this path")
	flag.StringVar(&o.spireBin, "spire-bin", ".bin/spire-1.13.3", "directory with spire-server and spire-agent (scripts/spire/build.sh)")
	flag.StringVar(&o.widBin, "wid-bin", ".bin/wid", "directory with widagent and widctl")
	flag.IntVar(&o.clients, "clients", 16, "concurrent FetchX509SVID clients")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long the FetchX509SVID load runs")
	flag.IntVar(&o.watchTrials, "watch-trials", 5, "identities created one at a time while a workload watches")
	flag.IntVar(&o.bulk, "bulk", 1000, "identities created at once for one workload")
	flag.BoolVar(&o.keep, "keep", false, "keep each system's temp dir (configs, data, logs) and print where")
	flag.Parse()
	o.systems = strings.Split(*systems, ",")
	log.SetFlags(0)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		stop()
		log.Fatal(err)
	}
}

func run(ctx context.Context, o options) error {
	if o.socket != "" {
		r, err := load.FetchX509(ctx, "unix://"+o.socket, o.clients, o.duration, nil)
		if err != nil {
			return err
		}
		fmt.Println(r)
		return nil
	}
	var all []*figures
	var failed []error
	for _, name := range o.systems {
		var s agentSystem
		switch strings.TrimSpace(name) {
		case "spire":
			s = system.NewSpire(o.spireBin)
		case "wid":
			s = system.NewWid(o.widBin)
		default:
			return fmt.Errorf("-system %q is unknown: use spire and/or wid", name)
		}
		f, err := measure(ctx, s, o)
		all = append(all, f)
		if err != nil {
			// Keep going: the other system's figures still count.
			log.Printf("%s: %v", f.name, err)
			failed = append(failed, fmt.Errorf("%s: %w", f.name, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	fmt.Println()
	printTable(os.Stdout, all, o)
	return errors.Join(failed...)
}

// measure starts s, takes every figure in turn, and stops it.
func measure(ctx context.Context, s agentSystem, o options) (f *figures, err error) {
	f = &figures{name: s.Name()}
	if o.keep {
		s.KeepDirs()
	}
	fmt.Printf("== %s\n", f.name)
	defer func() {
		if serr := s.Stop(); serr != nil && err == nil {
			err = serr
		}
		if o.keep {
			fmt.Printf("%s: kept %s\n", f.name, s.Dir())
		}
	}()
	step := func(what string, fn func() error) error {
		if err := fn(); err != nil {
			if rerr := s.Running(); rerr != nil {
				return fmt.Errorf("%s: %w (%v)", what, err, rerr)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := step("first SVID", func() error { return f.first.measure(ctx, s) }); err != nil {
		return f, err
	}
	fmt.Printf("first SVID: %s (start command returned after %s)\n", f.first.total.Round(time.Millisecond), f.first.start.Round(time.Millisecond))
	addr := "unix://" + s.SocketPath()
	if err := step("FetchX509SVID load", func() (err error) {
		f.load, err = load.FetchX509(ctx, addr, o.clients, o.duration, nil)
		return err
	}); err != nil {
		return f, err
	}
	fmt.Println(f.load)
	if o.watchTrials > 0 {
		if err := step("new identity to a watching workload", func() error { return f.watch.measure(ctx, s, addr, o.watchTrials) }); err != nil {
			return f, err
		}
		fmt.Println(f.watch)
	}
	f.rssBefore = readRSS(s.Processes())
	fmt.Printf("RSS before bulk: %s\n", f.rssBefore)
	if o.bulk > 0 {
		if err := step("bulk identities", func() error { return f.bulk.measure(ctx, s, addr, o.bulk) }); err != nil {
			return f, err
		}
		fmt.Println(f.bulk)
		f.rssAfter = readRSS(s.Processes())
		fmt.Printf("RSS with %d more SVIDs: %s\n", o.bulk, f.rssAfter)
	}
	return f, nil
}
