package agentcmd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/viper"
	"github.com/wid-project/wid/internal/core/agent/tbotconfig"
)

// readConfigFile reads widagent's config file: its own shape, or tbot's
// (version: v2 with onboarding or services), which is translated into
// widagent's keys first so that the rest is checked the same way.
func readConfigFile(path string) (*viper.Viper, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading config file %s: it does not exist", path)
		}
		return nil, fmt.Errorf("reading config file %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, tbotconfig.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading config file %s: %w", path, err)
	}
	raw := viper.New()
	if tbotconfig.Is(data) {
		settings, err := tbotconfig.Translate(data, tbotconfig.EnvFromOS())
		if err != nil {
			return nil, fmt.Errorf("config file %s (tbot's shape): %w", path, err)
		}
		if err := raw.MergeConfigMap(settings); err != nil {
			return nil, fmt.Errorf("reading config file %s: %w", path, err)
		}
		return raw, nil
	}
	raw.SetConfigFile(path)
	raw.SetConfigType("yaml")
	if err := raw.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("reading config file %s: %w", path, err)
	}
	return raw, nil
}
