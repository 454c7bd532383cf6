package resourcecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wid-project/wid/internal/cli/cmdutil"
	"github.com/wid-project/wid/internal/cli/iostreams"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// CreateOptions are the settings of `widctl create`.
type CreateOptions struct {
	IO      *iostreams.IOStreams
	Client  func(context.Context) (*client.Client, error)
	Printer func() (*output.Printer, error)

	// File is the path of the YAML file, or "-" for stdin.
	File string
	// Force replaces resources that exist.
	Force bool
}

// NewCmdCreate builds `widctl create`.
func NewCmdCreate(f *cmdutil.Factory, runF func(*CreateOptions) error) *cobra.Command {
	opts := &CreateOptions{IO: f.IOStreams, Client: f.Client, Printer: f.Printer}
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create resources from a YAML file",
		Long: `Create the resources in a YAML file: one or more documents separated by
"---", each a role, user, bot or workload_identity in the
kind/version/metadata/spec form that "widctl get KIND/NAME --format yaml" prints.

The file is checked before anything is sent: unknown keys, malformed SPIFFE
paths, CIDRs and durations are refused with the line they are on. Then every
document is created at once, or none is. Existing resources are refused
unless --force replaces them.`,
		Example: `  widctl create -f roles.yaml
  widctl get role/web --format yaml | sed 's/1h/2h/' | widctl create --force -f -

  # roles.yaml
  kind: role
  version: v1
  metadata:
    name: web
  spec:
    allow:
      spiffe:
        - path: /svc/web/*
          dns_sans: [web.example.com]
    options:
      max_svid_ttl: 1h`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && opts.File == "" {
				// widctl create roles.yaml: the file, without its -f.
				return cmdutil.InputErrorf("unexpected argument %q: to create what a file holds, run widctl create -f %s", args[0], args[0])
			}
			return cmdutil.NoArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.File == "" {
				return cmdutil.InputErrorf("no file given: pass -f FILE, or -f - to read from stdin")
			}
			if runF != nil {
				return runF(opts)
			}
			return createRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVarP(&opts.File, "file", "f", "", "YAML `FILE` to read, or - for stdin")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "replace resources that already exist")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

func createRun(ctx context.Context, opts *CreateOptions) error {
	rs, err := readResources(opts.IO.In, opts.File)
	if err != nil {
		return err
	}
	p, err := opts.Printer()
	if err != nil {
		return err
	}
	c, err := opts.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	created, err := cmdutil.CreateResources(ctx, c, opts.Force, rs...)
	if err != nil {
		return err
	}
	if p.Format != output.Text {
		return p.Resources("", created)
	}
	verb := "created"
	if opts.Force {
		verb = "created or replaced"
	}
	for _, r := range created {
		if _, err := fmt.Fprintf(opts.IO.Out, "%s %s\n", verb, resource.Ref(r)); err != nil {
			return err
		}
	}
	return nil
}

// readResources reads and checks every document of file before anything is
// sent, so a mistake in the third document leaves nothing half-created.
func readResources(stdin io.Reader, file string) ([]resource.Resource, error) {
	var (
		data []byte
		err  error
		name = file
	)
	if file == "-" {
		name = "stdin"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, cmdutil.InputErrorf("file %s does not exist: check the path given to -f", file)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, cmdutil.InputErrorf("cannot read %s: %v", name, err)
	}
	if strings.TrimSpace(string(data)) == "" {
		return nil, cmdutil.InputErrorf("%s is empty: it should hold one or more resource documents", name)
	}
	rs, err := resource.Decode(data)
	var joined interface{ Unwrap() []error }
	switch {
	case errors.As(err, &joined) && len(joined.Unwrap()) > 1:
		// One line per bad document, so each can be fixed in one pass.
		errs := joined.Unwrap()
		var b strings.Builder
		fmt.Fprintf(&b, "%s has %d problems, nothing was sent:", name, len(errs))
		for _, e := range errs {
			b.WriteString("\n  " + e.Error())
		}
		return nil, &cmdutil.Error{Code: cmdutil.ExitBadInput, Message: b.String(), Err: err}
	case err != nil:
		return nil, cmdutil.InputErrorf("%s: %v", name, err)
	}
	if len(rs) == 0 {
		return nil, cmdutil.InputErrorf("%s holds no resource documents: each needs kind, version, metadata and spec", name)
	}
	return rs, nil
}
