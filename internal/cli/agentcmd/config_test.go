package agentcmd

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/wid-project/wid/internal/cli/clitest"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/paths"
)

// clearEnv keeps the environment of whoever runs the tests out of them.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") || k == JoinTokenEnv {
			t.Setenv(k, "")
		}
	}
}

// TestConfigGolden: each testdata/config/NAME.yaml decodes as `widagent
// start --config NAME.yaml` would, to testdata/TestConfigGolden/NAME.golden:
// the settings as YAML, or the sentence and exit code that refuse the file.
// A change to a golden file is a change to what widagent's config file
// means; go test -update rewrites them.
func TestConfigGolden(t *testing.T) {
	clearEnv(t)
	files, err := filepath.Glob(filepath.Join("testdata", "config", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no config files: %v", err)
	}
	// Defaults that differ by user and machine.
	machine := strings.NewReplacer(paths.DefaultDataDir(), "$DEFAULT_DATA_DIR", paths.DefaultWorkloadSocket(), "$DEFAULT_WORKLOAD_SOCKET")
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			var got bytes.Buffer
			o, err := LoadStartConfig(file)
			if err != nil {
				r := cmdutil.Explain(err, "")
				fmt.Fprintf(&got, "exit %d\nerror: %s\n", r.Code, r.Message)
			} else if err := output.WriteYAML(&got, o); err != nil {
				t.Fatal(err)
			}
			clitest.Golden(t, []byte(machine.Replace(got.String())))
		})
	}
}

// Every flag of widagent start sets a key the config file decodes, so that
// flags, environment and file cannot drift apart: the key is the flag's
// name in snake case unless flagKeys says otherwise.
func TestEveryFlagHasAConfigKey(t *testing.T) {
	keys := append(slices.Clone(configKeys), flagOnly...)
	for _, k := range sdsKeys {
		keys = append(keys, "sds."+k)
	}
	newStartCmd().Flags().VisitAll(func(fl *pflag.Flag) {
		if slices.Contains(notSettings, fl.Name) {
			return
		}
		if key := keyOf(fl.Name); !slices.Contains(keys, key) {
			t.Errorf("--%s sets %q, which StartOptions does not decode", fl.Name, key)
		}
	})
	for flag := range flagKeys {
		if newStartCmd().Flags().Lookup(flag) == nil {
			t.Errorf("flagKeys names --%s, which widagent start does not have", flag)
		}
	}
}
