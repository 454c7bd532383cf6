package cmdutil

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/paths"
	"go.yaml.in/yaml/v3"
)

// Config is widctl's resolved configuration.
type Config struct {
	// AdminSocket is the local admin socket to use; empty when Auth is used.
	AdminSocket string
	// Auth is host:port of a remote auth service; empty when AdminSocket is used.
	Auth string
	// CAPin pins the auth service's host CA on first contact.
	CAPin string
	// Identity is the directory of a bot's or user's identity (see client.LoadIdentity).
	Identity string
	// Format is the output format.
	Format output.Format
	// Debug turns on debug logs on stderr.
	Debug bool
	// File is the config file that was read, if any.
	File string
}

// Target names the auth service for people: the admin socket or host:port.
func (c *Config) Target() string {
	if c.Auth != "" {
		return c.Auth
	}
	return c.AdminSocket
}

// Config keys: the config file, WIDCTL_<KEY> and the global flags share them.
const (
	KeyAdminSocket = "admin_socket"
	KeyAuth        = "auth"
	KeyCAPin       = "ca_pin"
	KeyIdentity    = "identity"
	KeyFormat      = "format"
	KeyDebug       = "debug"
)

// flagNames maps each config key to its global flag.
var flagNames = map[string]string{
	KeyAdminSocket: "admin-socket",
	KeyAuth:        "auth",
	KeyCAPin:       "ca-pin",
	KeyIdentity:    "identity",
	KeyFormat:      "format",
	KeyDebug:       "debug",
}

// ConfigFlag is the flag that names the config file; WIDCTL_CONFIG does too.
const ConfigFlag = "config"

// envPrefix prefixes every environment variable widctl reads.
const envPrefix = "WIDCTL"

// EnvVar is the environment variable for a config key.
func EnvVar(key string) string { return envPrefix + "_" + strings.ToUpper(key) }

// defaultAdminSocket is where a widagent started without flags puts its
// admin socket; tests point it elsewhere.
var defaultAdminSocket = func() string { return paths.AdminSocket(paths.DefaultDataDir()) }

// DefaultConfigFile is where widctl looks for a config file when none is named.
func DefaultConfigFile() string { return filepath.Join(ConfigDir(), "config.yaml") }

// ConfigDir is widctl's config dir, which holds its config file and logins:
// $XDG_CONFIG_HOME/widctl or ~/.config/widctl.
func ConfigDir() string {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "widctl")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "widctl")
	}
	return filepath.Join(os.TempDir(), "widctl")
}

// NewGlobalFlags defines the flags every widctl command takes. Their defaults
// are static so that help, man pages and completions read the same on every
// machine; the defaults found at run time are applied in LoadConfig.
func NewGlobalFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("widctl", pflag.ContinueOnError)
	fs.String(flagNames[KeyAdminSocket], "", "use the admin socket at `PATH` (default: the one in widagent's default data dir, if it exists)")
	fs.String(flagNames[KeyAuth], "", "reach a remote auth service at `HOST:PORT` over mTLS; several replicas separated by commas are tried in turn")
	fs.String(flagNames[KeyCAPin], "", "trust the auth service's CA with this `sha256:HEX` pin, printed by widagent start")
	fs.String(flagNames[KeyIdentity], "", "present the bot or user identity saved in `DIR` over --auth")
	fs.String(flagNames[KeyFormat], string(output.Text), "print results as `FORMAT`: text, json or yaml")
	fs.Bool(flagNames[KeyDebug], false, "log debug details to stderr")
	fs.String(ConfigFlag, "", "read settings from `FILE` (default ~/.config/widctl/config.yaml)")
	return fs
}

// source ranks where a setting came from; a higher source wins.
type source int

const (
	fromDefault source = iota
	fromFile
	fromEnv
	fromFlag
)

func (s source) String() string {
	switch s {
	case fromFlag:
		return "flags"
	case fromEnv:
		return "environment"
	case fromFile:
		return "config file"
	}
	return "defaults"
}

// LoadConfig resolves the configuration from flags, then WIDCTL_*
// environment variables, then the config file, then defaults. Every error is
// bad input: one sentence naming the setting and where it came from.
func LoadConfig(flags *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.AutomaticEnv()
	for key, name := range flagNames {
		fl := flags.Lookup(name)
		if fl == nil {
			return nil, fmt.Errorf("global flag --%s is not defined", name)
		}
		if err := v.BindPFlag(key, fl); err != nil {
			return nil, fmt.Errorf("binding --%s: %w", name, err)
		}
	}

	file, explicit := configFile(flags)
	fileKeys := map[string]bool{}
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		keys, err := checkConfigFile(file, data)
		if err != nil {
			return nil, err
		}
		fileKeys = keys
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return nil, InputErrorf("config file %s is not valid YAML: fix it or point --config elsewhere", file)
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		file = ""
	case errors.Is(err, fs.ErrNotExist):
		return nil, InputErrorf("config file %s does not exist: check --config or %s", file, EnvVar("CONFIG"))
	default:
		return nil, InputErrorf("cannot read config file %s: %v", file, unwrapPathError(err))
	}

	cfg := &Config{
		CAPin:    strings.TrimSpace(v.GetString(KeyCAPin)),
		Identity: expandHome(v.GetString(KeyIdentity)),
		File:     file,
	}
	if cfg.Format, err = output.ParseFormat(v.GetString(KeyFormat)); err != nil {
		return nil, InputError(err)
	}
	if raw, ok := os.LookupEnv(EnvVar(KeyDebug)); ok && raw != "" && !flags.Changed(flagNames[KeyDebug]) {
		if _, err := strconv.ParseBool(raw); err != nil {
			return nil, InputErrorf("%s=%q is not a boolean: set it to true or false", EnvVar(KeyDebug), raw)
		}
	}
	cfg.Debug = v.GetBool(KeyDebug)

	if err := resolveTarget(cfg, v, flags, fileKeys); err != nil {
		return nil, err
	}
	if cfg.CAPin != "" {
		if _, err := client.ParsePin(cfg.CAPin); err != nil {
			return nil, InputError(err)
		}
	}
	return cfg, nil
}

// resolveTarget picks the admin socket or the auth address. The one from the
// higher source wins; both from the same source is a contradiction the user
// must settle. With neither, the admin socket of widagent's default data dir
// is used when it exists.
func resolveTarget(cfg *Config, v *viper.Viper, flags *pflag.FlagSet, fileKeys map[string]bool) error {
	socket := strings.TrimSpace(v.GetString(KeyAdminSocket))
	auth := strings.TrimSpace(v.GetString(KeyAuth))
	socketFrom := sourceOf(KeyAdminSocket, flags, fileKeys)
	authFrom := sourceOf(KeyAuth, flags, fileKeys)
	switch {
	case socket != "" && auth != "" && socketFrom == authFrom:
		return InputErrorf("both an admin socket (%s) and an auth address (%s) are set in the %s: use only one of them", socket, auth, socketFrom)
	case auth != "" && authFrom > socketFrom:
		cfg.Auth = auth
	case socket != "" && socketFrom > authFrom:
		cfg.AdminSocket = expandHome(socket)
	default:
		def := defaultAdminSocket()
		if _, err := os.Stat(def); err == nil {
			cfg.AdminSocket = def
		}
	}
	return nil
}

func sourceOf(key string, flags *pflag.FlagSet, fileKeys map[string]bool) source {
	switch {
	case flags.Changed(flagNames[key]):
		return fromFlag
	case os.Getenv(EnvVar(key)) != "":
		return fromEnv
	case fileKeys[key]:
		return fromFile
	}
	return fromDefault
}

func configFile(flags *pflag.FlagSet) (file string, explicit bool) {
	if flags.Changed(ConfigFlag) {
		f, _ := flags.GetString(ConfigFlag)
		return expandHome(f), true
	}
	if f := os.Getenv(EnvVar("CONFIG")); f != "" {
		return expandHome(f), true
	}
	return DefaultConfigFile(), false
}

// checkConfigFile refuses unknown keys and values of the wrong shape, naming
// the line, and returns the keys that are set (non-empty).
func checkConfigFile(file string, data []byte) (map[string]bool, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, InputErrorf("config file %s is not valid YAML (%s): fix it or point --config elsewhere", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	set := map[string]bool{}
	if len(doc.Content) == 0 {
		return set, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, InputErrorf("config file %s must be a mapping of keys such as auth: and format:", file)
	}
	known := make([]string, 0, len(flagNames))
	for k := range flagNames {
		known = append(known, k)
	}
	sort.Strings(known)
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, val := top.Content[i], top.Content[i+1]
		if _, ok := flagNames[k.Value]; !ok {
			return nil, InputErrorf("config file %s, line %d: unknown key %q: the known keys are %s", file, k.Line, k.Value, strings.Join(known, ", "))
		}
		if val.Kind != yaml.ScalarNode {
			return nil, InputErrorf("config file %s, line %d: %s must be a single value", file, k.Line, k.Value)
		}
		if k.Value == KeyDebug && val.Tag != "!!bool" && val.Tag != "!!null" {
			return nil, InputErrorf("config file %s, line %d: debug is %q: set it to true or false", file, val.Line, val.Value)
		}
		if val.Value != "" && val.Tag != "!!null" {
			set[k.Value] = true
		}
	}
	return set, nil
}

func expandHome(p string) string {
	p = strings.TrimSpace(p)
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

// unwrapPathError keeps the reason and drops the repeated path.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
