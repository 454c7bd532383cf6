package e2e

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// spirePrebuildBins are the SPIRE binaries a whole run of the e2e tests
// needs: TestMain starts building them at once, in the background, so that
// SPIRE's build (minutes cold) overlaps the tests that mostly wait on
// processes and clocks instead of adding to them. A test that needs a
// SPIRE binary still asks spireBin, which waits for this build first.
var spirePrebuildBins = []string{"spire-agent", "spire-server"}

// spirePrebuild is the background build; done is closed when it has ended.
var spirePrebuild struct {
	done chan struct{}
	err  error
	out  []byte
}

// startSpirePrebuild starts building spirePrebuildBins, unless the run is
// -short (SPIRE's tests skip) or picks tests with -run or -list (a run of a
// few tests builds SPIRE only when one of them asks). It returns what stops
// the build, if it is still going when the tests have ended. flag.Parse
// must have run.
func startSpirePrebuild() (stop func()) {
	if testing.Short() || flag.Lookup("test.run").Value.String() != "" || flag.Lookup("test.list").Value.String() != "" {
		return func() {}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{filepath.Join(root, "scripts", "spire", "build.sh")}, spirePrebuildBins...)
	if nice, err := exec.LookPath("nice"); err == nil {
		// Below the tests in priority: the build takes the CPU they leave,
		// and a test that measures time or memory is not slowed by it.
		args = append([]string{nice, "-n", "10"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "SPIRE_VERSION="+spireVersion, "SPIRE_BIN_DIR="+filepath.Join(root, ".bin", "spire-"+spireVersion))
	// Its own process group: stopping the build stops the go build under
	// build.sh too, and SIGTERM lets build.sh remove its work directory.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	spirePrebuild.done = make(chan struct{})
	go func() {
		defer close(spirePrebuild.done)
		spirePrebuild.out, spirePrebuild.err = cmd.CombinedOutput()
	}()
	return func() {
		cancel()
		<-spirePrebuild.done
	}
}

// waitSpirePrebuild waits for the background build, if one was started. Its
// failure is not the caller's: spireBin runs build.sh again, which reports
// why in the test that needs SPIRE.
func waitSpirePrebuild(t *testing.T) {
	t.Helper()
	if spirePrebuild.done == nil {
		return
	}
	select {
	case <-spirePrebuild.done:
	default:
		start := time.Now()
		<-spirePrebuild.done
		t.Logf("waited %s for the background build of SPIRE %s", time.Since(start).Round(time.Second), spireVersion)
	}
	if spirePrebuild.err != nil {
		t.Logf("the background build of SPIRE %s failed (%v); building again:\n%s", spireVersion, spirePrebuild.err, spirePrebuild.out)
	}
}
