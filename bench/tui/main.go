// Command tui measures issue 6's figures for `widctl tui`: with 10,000
// events in the audit log, the time to the first screen with the backlog
// drawn; and while SVIDs are issued at -rate per second, the time from a key
// press to the redraw that shows it, and the dashboard's memory (peak RSS).
//
// The parent runs a real auth service in-process on a temp data dir, fills
// its audit log by issuing SVIDs, and starts itself again as the dashboard
// (-child): the same model, feed and bubbletea program as `widctl tui`, over
// the admin socket, drawing into a counting writer instead of a terminal, so
// that the RSS is the dashboard's alone. The child presses keys itself
// (through the program's message queue, behind the live events) and times
// each from the press to the renderer's write of the next frame.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/tui"
)

// The figures issue 6 sets.
const (
	firstScreenTarget = 300 * time.Millisecond
	keyTarget         = 50 * time.Millisecond
	rssTarget         = 80 << 20
)

func main() {
	events := flag.Int("events", 10000, "audit events in the log before the dashboard starts")
	rate := flag.Int("rate", 500, "SVIDs issued per second while keys are pressed")
	duration := flag.Duration("duration", 12*time.Second, "how long the load and the key presses last")
	keyEvery := flag.Duration("key-every", 100*time.Millisecond, "time between key presses")
	child := flag.String("child", "", "run as the dashboard on this admin socket (used by the parent)")
	want := flag.Int("want", tui.Backlog, "with -child: SVID events in the backlog, drawn on the first screen")
	flag.Parse()
	var err error
	if *child != "" {
		err = runChild(*child, *want, *duration, *keyEvery)
	} else {
		err = runParent(*events, *rate, *duration, *keyEvery)
	}
	if err != nil {
		log.Fatalf("bench/tui: %v", err)
	}
}

// result is what the child reports, as JSON on its last stdout line.
type result struct {
	FirstScreen time.Duration   `json:"first_screen"`
	Keys        []time.Duration `json:"keys"`
	Events      int             `json:"events"`
	PeakRSS     int64           `json:"peak_rss"`
	EndRSS      int64           `json:"end_rss"`
}

func runParent(events, rate int, duration, keyEvery time.Duration) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "wid-bench-tui-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := auth.Open(ctx, auth.Config{DataDir: dir, TrustDomain: "bench.example", ListenAddr: "127.0.0.1:0", Version: "bench"})
	if err != nil {
		return err
	}
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	info := srv.Info()
	admin, err := client.Dial(client.Config{AdminSocket: info.AdminSocket})
	if err != nil {
		return err
	}
	defer admin.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	var n atomic.Int64
	issue := func() error {
		i := n.Add(1)
		_, err := admin.SignX509SVID(ctx, &authv1.SignX509SVIDRequest{SpiffeId: fmt.Sprintf("/svc/web/%d", i), PublicKey: pub, TtlSeconds: 3600})
		return err
	}

	// Fill the log: SVID issuances, what the SVIDs tab shows.
	start := time.Now()
	var wg sync.WaitGroup
	var fillErr error
	var once sync.Once
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Load() < int64(events) {
				if err := issue(); err != nil {
					once.Do(func() { fillErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if fillErr != nil {
		return fmt.Errorf("filling the audit log: %w", fillErr)
	}
	backlog, err := admin.ListAuditEvents(ctx, &authv1.ListAuditEventsRequest{Query: &authv1.AuditQuery{Limit: tui.Backlog}})
	if err != nil || len(backlog.Events) == 0 {
		return fmt.Errorf("reading the audit log: %v", err)
	}
	logSize := backlog.Events[len(backlog.Events)-1].Seq
	want := 0
	for _, e := range backlog.Events {
		if strings.HasPrefix(e.Type, "svid.") {
			want++
		}
	}
	fmt.Fprintf(os.Stderr, "bench/tui: %d events in the audit log (filled in %s)\n", logSize, time.Since(start).Round(time.Millisecond))

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self, "-child", info.AdminSocket, "-want", strconv.Itoa(want), "-duration", duration.String(), "-key-every", keyEvery.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	// The child says "ready" once its first screen is drawn; then the load starts.
	ready := make([]byte, len("ready\n"))
	if _, err := io.ReadFull(out, ready); err != nil || string(ready) != "ready\n" {
		cmd.Wait()
		return fmt.Errorf("the dashboard did not start: %q %v", ready, err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	issued := make(chan int64, 1)
	go func() { issued <- load(loadCtx, issue, rate) }()
	loadStart := time.Now()
	rest, err := io.ReadAll(out)
	if err != nil {
		return err
	}
	loadTime := time.Since(loadStart)
	stopLoad()
	got := <-issued
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("the dashboard: %w", err)
	}
	var r result
	if err := json.Unmarshal(rest, &r); err != nil {
		return fmt.Errorf("reading the dashboard's figures %q: %w", rest, err)
	}
	if len(r.Keys) == 0 {
		return errors.New("no key press was timed")
	}

	slices.Sort(r.Keys)
	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	achieved := float64(got) / loadTime.Seconds()
	fmt.Printf("bench/tui: widctl tui's model, feed and renderer over the admin socket of an in-process auth service\n")
	fmt.Printf("  first screen, %d events in the log (backlog %d):  %s   target < %s: %s\n", logSize, tui.Backlog,
		ms(r.FirstScreen), firstScreenTarget, verdict(r.FirstScreen < firstScreenTarget))
	fmt.Printf("  load: %d SVIDs issued in %s = %.0f/s (asked %d/s); the dashboard received %d events\n", got, loadTime.Round(time.Millisecond), achieved, rate, r.Events)
	p := func(q int) time.Duration { return r.Keys[(len(r.Keys)-1)*q/100] }
	fmt.Printf("  key to redraw under that load, %d presses:  median %s  p90 %s  p99 %s  max %s   target < %s: %s\n",
		len(r.Keys), ms(p(50)), ms(p(90)), ms(p(99)), ms(r.Keys[len(r.Keys)-1]), keyTarget, verdict(p(90) < keyTarget))
	fmt.Printf("  RSS of the dashboard process:  peak %.1f MB, at the end %.1f MB   target < %d MB: %s\n",
		float64(r.PeakRSS)/(1<<20), float64(r.EndRSS)/(1<<20), rssTarget>>20, verdict(r.PeakRSS < rssTarget))
	return nil
}

// load issues SVIDs at rate per second until ctx ends, from a few workers,
// and returns how many it issued.
func load(ctx context.Context, issue func() error, rate int) int64 {
	const workers = 8
	tokens := make(chan struct{}, rate)
	var issued atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
					if issue() == nil {
						issued.Add(1)
					}
				}
			}
		}()
	}
	// Tokens every 10 ms, rate/100 at a time: a steady rate, not a burst a second.
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	start, sent := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return issued.Load()
		case <-t.C:
			due := int(time.Since(start).Seconds() * float64(rate))
			for ; sent < due; sent++ {
				select {
				case tokens <- struct{}{}:
				default: // the workers are behind: the achieved rate says so
				}
			}
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// probe wraps the dashboard's model to time key presses: a pressMsg carries
// its press time; the model's View after it arms the writer, and the
// renderer's next write is the redraw.
type probe struct {
	*tui.Model
	w *frameWriter
}

type pressMsg struct {
	key tea.KeyMsg
	at  time.Time
}

func (p probe) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if pm, ok := msg.(pressMsg); ok {
		_, cmd := p.Model.Update(pm.key)
		p.w.pressed(pm.at)
		return p, cmd
	}
	_, cmd := p.Model.Update(msg)
	return p, cmd
}

// shownRE is the SVIDs tab's count line.
var shownRE = regexp.MustCompile(`\n(\d+) events`)

func (p probe) View() string {
	v := p.Model.View()
	n := 0
	if m := shownRE.FindStringSubmatch(v); m != nil {
		n, _ = strconv.Atoi(m[1])
	}
	p.w.viewed(n)
	return v
}

// frameWriter stands in for the terminal: it counts what the renderer
// writes and timestamps the frames the probe waits for.
type frameWriter struct {
	mu          sync.Mutex
	start       time.Time
	firstScreen time.Duration
	want        int  // SVID events in the backlog
	listShown   bool // a View showed the list with the backlog in it
	pressAt     time.Time
	pressViewed bool
	keys        []time.Duration
	ready       chan struct{}
}

func (w *frameWriter) pressed(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pressAt, w.pressViewed = at, false
}

func (w *frameWriter) viewed(shown int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.pressAt.IsZero() {
		w.pressViewed = true
	}
	if w.firstScreen == 0 && shown >= w.want {
		w.listShown = true
	}
}

func (w *frameWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if w.listShown && w.firstScreen == 0 {
		w.firstScreen = now.Sub(w.start)
		close(w.ready)
	}
	if w.pressViewed {
		w.keys = append(w.keys, now.Sub(w.pressAt))
		w.pressAt, w.pressViewed = time.Time{}, false
	}
	return len(b), nil
}

// runChild is the dashboard: `widctl tui`'s parts, drawing into a
// frameWriter at 120x40.
func runChild(socket string, want int, duration, keyEvery time.Duration) error {
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.Dial(client.Config{AdminSocket: socket})
	if err != nil {
		return err
	}
	defer c.Close()
	feed := tui.NewFeed(c)
	var received atomic.Int64
	m := tui.New(tui.Options{Target: c.Target, Messages: counting(ctx, feed.Messages(), &received), Explain: feed.Explain})
	w := &frameWriter{start: start, ready: make(chan struct{}), want: want}
	prog := tea.NewProgram(probe{Model: m, w: w}, tea.WithContext(ctx), tea.WithInput(nil), tea.WithOutput(w), tea.WithoutSignalHandler())
	go feed.Run(ctx)
	go prog.Send(tea.WindowSizeMsg{Width: 120, Height: 40})
	runErr := make(chan error, 1)
	go func() { _, err := prog.Run(); runErr <- err }()

	select {
	case <-w.ready:
	case err := <-runErr:
		return fmt.Errorf("the dashboard stopped before its first screen: %v", err)
	case <-time.After(30 * time.Second):
		return errors.New("no first screen in 30s")
	}
	fmt.Println("ready")

	// Presses: down and up in turn, as someone reading the list does.
	keys := []tea.KeyMsg{{Type: tea.KeyDown}, {Type: tea.KeyUp}}
	t := time.NewTicker(keyEvery)
	end := time.After(duration)
	var peak int64
	for i := 0; ; i++ {
		select {
		case <-t.C:
			prog.Send(pressMsg{key: keys[i%2], at: time.Now()})
			peak = max(peak, rss("VmRSS"))
			continue
		case <-end:
		}
		break
	}
	t.Stop()
	endRSS := rss("VmRSS")
	peak = max(peak, rss("VmHWM"), endRSS)
	prog.Quit()
	<-runErr
	w.mu.Lock()
	r := result{FirstScreen: w.firstScreen, Keys: w.keys, Events: int(received.Load()), PeakRSS: peak, EndRSS: endRSS}
	w.mu.Unlock()
	return json.NewEncoder(os.Stdout).Encode(r)
}

// counting passes the feed's messages on and counts the events among them.
func counting(ctx context.Context, in <-chan tea.Msg, n *atomic.Int64) <-chan tea.Msg {
	out := make(chan tea.Msg, cap(in))
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-in:
				if _, ok := m.(tui.EventMsg); ok {
					n.Add(1)
				}
				select {
				case out <- m:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// rss reads a size line (VmRSS, VmHWM) of /proc/self/status, in bytes.
func rss(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
