package bot

import (
	"context"
	"fmt"
	"strings"
	"time"

	authv1 "github.com/wid-project/wid/api/auth/v1"

	"github.com/spf13/cobra"

	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/cli/principal"
	"github.com/wid-project/wid/internal/cli/resourcecmd"
	"github.com/wid-project/wid/internal/cli/token"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl bot create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	Name     string
	Roles    []string
	TokenTTL resource.Duration
	Force    bool
}

// NewCmdCreate builds `widctl bot create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:     "create NAME --roles ROLE[,ROLE...] [--token-ttl DURATION] [--force]",
		Aliases: []string{"add"},
		Short:   "Create a bot and make its first join token",
		Long: `Create a bot holding the given roles and make a single-use join token for it.
The token is printed once, with the widagent command that joins an agent
as the bot. Make more tokens with "widctl token create".

An existing bot of the same name is refused unless --force replaces it: the
bot then holds exactly the given roles, and a new join token is made. Agents
already joined as the bot stay joined and get what the new roles grant.`,
		Example: `  widctl bot create web-agent --roles web
  widctl bot create ci --roles deploy,web --token-ttl 10m
  widctl bot create web-agent --roles web,api --force`,
		Args: cmdutil.ExactArgs(1, "the bot's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Name = args[0]
			if _, err := opts.Bot(); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringSliceVar(&opts.Roles, "roles", nil, "`ROLES` the bot holds, comma-separated")
	cmd.RegisterFlagCompletionFunc("roles", resourcecmd.CompleteNameList(f, resource.KindRole))
	cmdutil.DurationVar(cmd.Flags(), &opts.TokenTTL, "token-ttl", "the join token expires after `DURATION` (default 1h)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace a bot of the same name and make it a new join token")
	return cmd
}

// Bot builds and checks the bot the options describe.
func (opts *CreateOptions) Bot() (*resource.Bot, error) {
	if err := resource.ValidateName(opts.Name); err != nil {
		return nil, cmdutil.InputError(err)
	}
	roles, err := principal.Roles(resource.KindBot, opts.Name, opts.Roles)
	if err != nil {
		return nil, err
	}
	b := &resource.Bot{
		Header: resource.Header{Kind: resource.KindBot, Version: resource.V1, Metadata: resource.Metadata{Name: opts.Name}},
		Spec:   resource.BotSpec{Roles: roles},
	}
	if err := b.Validate(); err != nil {
		return nil, cmdutil.InputError(err)
	}
	return b, nil
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	b, err := opts.Bot()
	if err != nil {
		return err
	}
	// The join command printed needs the auth address and CA pin.
	p, c, ping, err := principal.Connect(ctx, opts.Printer, opts.Client)
	if err != nil {
		return err
	}
	defer c.Close()
	ttl := int64(opts.TokenTTL.D() / time.Second)
	type joinToken struct {
		secret string
		doc    []byte
	}
	verb, tok, err := principal.CreateOrReplace(ctx, c, b, opts.Force, func() (joinToken, error) {
		resp, err := c.CreateBot(ctx, &authv1.CreateBotRequest{Name: b.Metadata.Name, Roles: b.Spec.Roles, TokenTtlSeconds: ttl})
		return joinToken{resp.GetToken(), resp.GetJoinToken()}, err
	}, func() (joinToken, error) {
		// The bot was replaced; it needs a join token of its own.
		resp, err := c.CreateJoinToken(ctx, &authv1.CreateJoinTokenRequest{Bot: b.Metadata.Name, TtlSeconds: ttl, Uses: 1, Method: resource.JoinMethodToken})
		if err != nil {
			return joinToken{}, fmt.Errorf("bot %s was replaced, but making its join token failed (make one with widctl token create %s): %w", b.Metadata.Name, b.Metadata.Name, err)
		}
		return joinToken{resp.GetToken(), resp.GetJoinToken()}, nil
	})
	if err != nil {
		return err
	}
	j, err := token.NewJoin(ping, tok.secret, tok.doc)
	if err != nil {
		return err
	}
	j.Roles = b.Spec.Roles
	return j.Print(p, fmt.Sprintf("%s bot %s with roles %s.", verb, b.Metadata.Name, strings.Join(b.Spec.Roles, ", ")))
}
