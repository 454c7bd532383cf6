package agentcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/core/agent"
	"github.com/wid-project/wid/internal/core/auth"
	"github.com/wid-project/wid/internal/core/ca"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/kubejoin"
	"github.com/wid-project/wid/internal/core/store/storeurl"
)

// StartOptions are widagent start's settings after flags, environment and
// config file. Their yaml names are the config file's keys, and, but for
// flagKeys, each flag's name in snake case is the key it sets: this struct
// is the one list of settings.
type StartOptions struct {
	Roles       []string `yaml:"roles"`
	DataDir     string   `yaml:"data_dir"`
	Store       string   `yaml:"store"`
	KEKFile     string   `yaml:"kek_file"`
	TrustDomain string   `yaml:"trust_domain"`
	AuthListen  string   `yaml:"auth_listen"`
	ServerNames []string `yaml:"server_names"`
	LogLevel    string   `yaml:"log_level"`
	// LogFormat is text or json; LogFile, when set, takes the logs instead
	// of stderr.
	LogFormat string `yaml:"log_format"`
	LogFile   string `yaml:"log_file"`
	// CASubject, SVIDTTL and JWTSVIDTTL are auth service settings.
	CASubject  ca.Subject    `yaml:"ca_subject"`
	SVIDTTL    time.Duration `yaml:"svid_ttl"`
	JWTSVIDTTL time.Duration `yaml:"jwt_svid_ttl"`
	// AgentSync is how the auth service keeps agents up to date.
	AgentSync string `yaml:"agent_sync"`
	// Init makes a new trust domain in a data dir that is not empty.
	Init bool `yaml:"init"`
	// KubernetesClusters are what kubernetes join tokens may name (config file only).
	KubernetesClusters []kubejoin.Cluster `yaml:"kubernetes_clusters"`
	// Bundle endpoint and OIDC discovery (see docs/federation.md, docs/oidc.md).
	BundleEndpointListen string        `yaml:"bundle_endpoint_listen"`
	BundleEndpointCert   string        `yaml:"bundle_endpoint_cert"`
	BundleEndpointKey    string        `yaml:"bundle_endpoint_key"`
	BundleRefreshHint    time.Duration `yaml:"bundle_refresh_hint"`
	JWTIssuer            string        `yaml:"jwt_issuer"`

	// Agent settings.
	Auth                          string                `yaml:"auth"`
	JoinToken                     string                `yaml:"join_token"`
	JoinTokenFile                 string                `yaml:"join_token_file"`
	JoinMethod                    string                `yaml:"join_method"`
	SATokenFile                   string                `yaml:"sa_token_file"`
	CertFile                      string                `yaml:"cert"`
	KeyFile                       string                `yaml:"key"`
	CAPin                         string                `yaml:"ca_pin"`
	WorkloadSocket                string                `yaml:"workload_socket"`
	DiagAddr                      string                `yaml:"diag_addr"`
	NoDevIdentity                 bool                  `yaml:"no_dev_identity"`
	AllowUnauthenticatedVerifiers bool                  `yaml:"allow_unauthenticated_verifiers"`
	SVIDs                         []agent.ConfigSVID    `yaml:"svids"`
	Outputs                       []agent.Output        `yaml:"outputs"`
	Attestors                     agent.AttestorsConfig `yaml:"attestors"`
	SDS                           agent.SDSConfig       `yaml:"sds"`
	// ExtraWorkloadAPIs are more Workload API sockets, each with its own
	// svids (config file only; a tbot config's further services).
	ExtraWorkloadAPIs []agent.WorkloadAPIConfig `yaml:"extra_workload_apis"`
}

// configFlag names the config file; it is not a setting of its own.
const configFlag = "config"

// notSettings are the flags that set no config key.
var notSettings = []string{configFlag, "help"}

// envPrefix prefixes the environment variable of every setting.
const envPrefix = "WIDAGENT"

// flagKeys are the flags whose key is not their name in snake case. The
// config file takes those names too (server_name beside server_names), as
// docs/start.md says the file takes the flags' names.
var flagKeys = map[string]string{
	"server-name":          "server_names",
	"sds-spiffe-validator": "sds.spiffe_validator",
}

// keyOf is the config key that flag sets.
func keyOf(flag string) string {
	if k, ok := flagKeys[flag]; ok {
		return k
	}
	return strings.ReplaceAll(flag, "-", "_")
}

// yamlKeys lists the yaml names of a struct type's fields, in order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// flagOnly are settings a config file may not hold: --init makes a new
// trust domain once, and from a file would be there at every start.
var flagOnly = []string{"init"}

// configKeys are the keys a config file may hold, and sdsKeys those of its
// sds section; others are refused.
var (
	configKeys = slices.DeleteFunc(yamlKeys(reflect.TypeFor[StartOptions]()), func(k string) bool { return slices.Contains(flagOnly, k) })
	sdsKeys    = yamlKeys(reflect.TypeFor[agent.SDSConfig]())
)

// LoadStartConfig reads widagent start's settings from configFile and args
// as `widagent start --config FILE ARGS...` would, without starting
// anything: tests of shipped config files use it.
func LoadStartConfig(configFile string, args ...string) (StartOptions, error) {
	ios, _, _, _ := iostreams.Test()
	cmd := NewCmdStart(&cmdutil.Factory{IOStreams: ios}, nil)
	cmd.SetOut(io.Discard)
	if err := cmd.Flags().Parse(args); err != nil {
		return StartOptions{}, cmdutil.InputError(err)
	}
	return loadStartOptions(cmd.Flags(), configFile)
}

// loadStartOptions merges the settings: flags, then WIDAGENT_* environment
// variables, then the config file, then the flags' defaults. Every error is
// bad input, in one sentence.
func loadStartOptions(flags *pflag.FlagSet, configFile string) (StartOptions, error) {
	o, err := decodeStartOptions(flags, configFile)
	if err != nil {
		var ce *cmdutil.Error
		if !errors.As(err, &ce) {
			err = cmdutil.InputError(err)
		}
		return StartOptions{}, err
	}
	return o, nil
}

func decodeStartOptions(flags *pflag.FlagSet, configFile string) (StartOptions, error) {
	v := viper.New()
	v.SetEnvPrefix(envPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_", ".", "_"))
	v.AutomaticEnv()
	// aliases are config keys spelt as their flags are; each stands for the
	// key its flag sets.
	aliases := map[string]string{}
	var bindErr error
	flags.VisitAll(func(fl *pflag.Flag) {
		if slices.Contains(notSettings, fl.Name) || bindErr != nil {
			return
		}
		key := keyOf(fl.Name)
		if snake := strings.ReplaceAll(fl.Name, "-", "_"); snake != key {
			aliases[snake] = key
		}
		if err := v.BindPFlag(key, fl); err != nil {
			bindErr = fmt.Errorf("binding --%s: %w", fl.Name, err)
		}
	})
	if bindErr != nil {
		return StartOptions{}, bindErr
	}
	if configFile != "" {
		if err := mergeConfigFile(v, configFile, aliases); err != nil {
			return StartOptions{}, err
		}
	}
	var o StartOptions
	// ErrorUnused refuses unknown keys inside svids and outputs too.
	if err := v.Unmarshal(&o, func(c *mapstructure.DecoderConfig) {
		c.ErrorUnused = true
		// yaml tags, so that svids[].rules read like a workload identity's rules.
		c.TagName = "yaml"
	}); err != nil {
		return StartOptions{}, fmt.Errorf("reading settings from %s: %s", configFileName(configFile), strings.ReplaceAll(err.Error(), "\n", " "))
	}
	token, err := resolveJoinToken(flags, o)
	if err != nil {
		return StartOptions{}, err
	}
	o.JoinToken, o.JoinTokenFile = token, ""
	if err := o.check(configFile); err != nil {
		return StartOptions{}, err
	}
	return o, nil
}

// mergeConfigFile reads configFile into v, refusing unknown keys and a key
// given under both its names.
func mergeConfigFile(v *viper.Viper, configFile string, aliases map[string]string) error {
	raw, err := readConfigFile(configFile)
	if err != nil {
		return err
	}
	settings := raw.AllSettings()
	for _, k := range raw.AllKeys() {
		if key, ok := aliases[k]; ok {
			if raw.IsSet(key) {
				return fmt.Errorf("config file %s has both %q and %q: keep one of them", configFile, k, key)
			}
			delete(settings, k)
			setNested(settings, key, raw.Get(k))
			continue
		}
		top := strings.SplitN(k, ".", 2)[0]
		if !slices.Contains(configKeys, top) {
			return fmt.Errorf("config file %s has unknown key %q: known keys are %s", configFile, k, strings.Join(configKeys, ", "))
		}
		if sub, ok := strings.CutPrefix(k, "sds."); ok && !slices.Contains(sdsKeys, sub) {
			return fmt.Errorf("config file %s has unknown key %q: sds takes %s", configFile, k, strings.Join(sdsKeys, ", "))
		}
	}
	if err := v.MergeConfigMap(settings); err != nil {
		return fmt.Errorf("reading config file %s: %w", configFile, err)
	}
	return nil
}

// check refuses settings that contradict each other or that name what
// does not exist.
func (o *StartOptions) check(configFile string) error {
	if o.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if _, err := storeurl.Parse(o.Store, o.DataDir); err != nil {
		return err
	}
	for _, r := range o.Roles {
		if r != "auth" && r != "agent" {
			return fmt.Errorf("role %q is unknown: --roles takes auth, agent or both", r)
		}
	}
	if len(o.Roles) == 0 {
		return errors.New("--roles is empty: give auth, agent or both")
	}
	if o.AgentSync != auth.AgentSyncIncremental && o.AgentSync != auth.AgentSyncFull {
		return fmt.Errorf("--agent-sync %q is unknown: give %s or %s", o.AgentSync, auth.AgentSyncIncremental, auth.AgentSyncFull)
	}
	if !slices.Contains(o.Roles, "auth") {
		if o.Auth == "" {
			return errors.New("--roles agent needs --auth HOST:PORT of the auth service")
		}
		if o.Store != "" {
			return errors.New("--store is for the auth service; an agent alone (--roles agent) keeps only its identity in --data-dir")
		}
		if o.KEKFile != "" {
			return errors.New("--kek-file is for the auth service; an agent alone (--roles agent) holds no CA keys")
		}
		if _, err := client.SplitAuth(o.Auth); err != nil {
			return err
		}
	} else if o.Auth != "" || o.JoinToken != "" || (o.JoinMethod != "" && o.JoinMethod != agent.JoinMethodToken) {
		return errors.New("--auth, a join token (--join-token, --join-token-file or " + JoinTokenEnv + ") and --join-method are for an agent alone (--roles agent); with the auth service in this process the agent joins it directly")
	}
	if len(o.KubernetesClusters) > 0 {
		if !slices.Contains(o.Roles, "auth") {
			return errors.New("kubernetes_clusters configure the auth service, which this process does not run: move them to the auth service's config file")
		}
		if err := kubejoin.ValidateClusters(o.KubernetesClusters); err != nil {
			return fmt.Errorf("%s: %w", configFileName(configFile), err)
		}
	}
	if o.LogFormat != "" && o.LogFormat != LogFormatText && o.LogFormat != LogFormatJSON {
		return fmt.Errorf("--log-format %q is unknown: use %s or %s", o.LogFormat, LogFormatText, LogFormatJSON)
	}
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if !slices.Contains(o.Roles, "auth") && (o.CASubject != (ca.Subject{}) || o.SVIDTTL != 0 || o.JWTSVIDTTL != 0) {
		return errors.New("ca_subject, svid_ttl and jwt_svid_ttl configure the auth service, which this process does not run: move them to the auth service's config file")
	}
	if o.Attestors.Kubernetes.NodeName == "" {
		// The downward API's spec.nodeName, as the manifests set it.
		o.Attestors.Kubernetes.NodeName = os.Getenv(NodeNameEnv)
	}
	switch o.JoinMethod {
	case "", agent.JoinMethodToken, agent.JoinMethodKubernetes:
		if o.CertFile != "" || o.KeyFile != "" {
			return fmt.Errorf("--cert and --key are for --join-method %s", agent.JoinMethodX509Pop)
		}
	case agent.JoinMethodX509Pop:
		if o.CertFile == "" || o.KeyFile == "" {
			return errors.New("--join-method x509pop needs the machine's certificate and key: pass --cert FILE and --key FILE")
		}
	default:
		return fmt.Errorf("--join-method %q is unknown: use %s, %s or %s", o.JoinMethod, agent.JoinMethodToken, agent.JoinMethodKubernetes, agent.JoinMethodX509Pop)
	}
	return nil
}

// NodeNameEnv names the node the agent runs on, for the kubernetes
// attestor: set from the downward API's spec.nodeName.
const NodeNameEnv = "WID_NODE_NAME"

// JoinTokenEnv holds the join token out of the process's command line,
// which every local user can read in /proc.
const JoinTokenEnv = "WID_JOIN_TOKEN"

// maxJoinTokenFile bounds a join token file: a token is a 64-character
// secret or a kubernetes join token's name.
const maxJoinTokenFile = 4096

// resolveJoinToken picks the join token from the first place that sets one:
// --join-token, --join-token-file, WID_JOIN_TOKEN, WIDAGENT_JOIN_TOKEN,
// WIDAGENT_JOIN_TOKEN_FILE, then the config file's join_token or
// join_token_file. o holds what viper merged (flag, else environment, else
// config file) for join_token and join_token_file.
func resolveJoinToken(flags *pflag.FlagSet, o StartOptions) (string, error) {
	tokenFlag, fileFlag := flags.Changed("join-token"), flags.Changed("join-token-file")
	switch {
	case tokenFlag && fileFlag:
		return "", errors.New("--join-token and --join-token-file both give a join token: pass one")
	case tokenFlag:
		return o.JoinToken, nil
	case fileFlag:
		return readJoinTokenFile(o.JoinTokenFile)
	}
	if t := os.Getenv(JoinTokenEnv); t != "" {
		return strings.TrimSpace(t), nil
	}
	if os.Getenv(envPrefix+"_JOIN_TOKEN") != "" {
		return o.JoinToken, nil
	}
	if os.Getenv(envPrefix+"_JOIN_TOKEN_FILE") != "" {
		return readJoinTokenFile(o.JoinTokenFile)
	}
	switch {
	case o.JoinToken != "" && o.JoinTokenFile != "":
		return "", errors.New("the config file sets both join_token and join_token_file: keep one")
	case o.JoinTokenFile != "":
		return readJoinTokenFile(o.JoinTokenFile)
	}
	return o.JoinToken, nil
}

// readJoinTokenFile reads a join token from path: the whole file, without
// surrounding white space.
func readJoinTokenFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("--join-token-file is empty: name the file that holds the join token")
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("the join token file %s does not exist: write the token that widctl bot create printed into it", path)
		}
		return "", fmt.Errorf("reading the join token file %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJoinTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("reading the join token file %s: %w", path, err)
	}
	if len(b) > maxJoinTokenFile {
		return "", fmt.Errorf("the join token file %s is larger than %d bytes, so it does not hold only a join token: write the token alone into it", path, maxJoinTokenFile)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("the join token file %s is empty: write the token that widctl bot create printed into it", path)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("the join token file %s holds more than one word: write the token alone into it", path)
	}
	return token, nil
}

// setNested sets a dotted key ("sds.spiffe_validator") in a settings map.
func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

func configFileName(f string) string {
	if f == "" {
		return "flags and environment"
	}
	return f
}
