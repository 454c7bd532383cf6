package cmdutil

import (
	"context"
	"fmt"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/cli/output"
	"github.com/wid-project/wid/internal/core/client"
	"github.com/wid-project/wid/internal/core/resource"
)

// Resource calls go through these helpers so that every command sends and
// reads resource documents the same way: JSON, as the auth API defines.

// GetResource fetches kind/name.
func GetResource(ctx context.Context, c *client.Client, kind, name string) (resource.Resource, error) {
	resp, err := c.GetResource(ctx, &authv1.GetResourceRequest{Kind: kind, Name: name})
	if err != nil {
		return nil, err
	}
	return decodeAnswer(resp.GetResource())
}

// ListResources lists every resource of kind, page after page, and names
// the stored documents the auth service could not decode (left out of the
// list).
func ListResources(ctx context.Context, c *client.Client, kind string) ([]resource.Resource, []*authv1.CorruptResource, error) {
	docs, corrupt, err := client.ListAll(ctx, c, kind)
	if err != nil {
		return nil, nil, err
	}
	rs, err := decodeAnswers(docs)
	return rs, corrupt, err
}

// CorruptWarning is what people are told of a stored document that does
// not decode: which one, why, and what to do.
func CorruptWarning(c *authv1.CorruptResource) string {
	ref := c.GetKind() + "/" + c.GetName()
	return fmt.Sprintf("warning: the stored %s is corrupt and is left out (%s): remove it with widctl rm %s and create it again, or restore the auth service's data dir from a backup", ref, c.GetError(), ref)
}

// CreateResources creates rs, all or none; force replaces existing ones.
func CreateResources(ctx context.Context, c *client.Client, force bool, rs ...resource.Resource) ([]resource.Resource, error) {
	docs := make([][]byte, len(rs))
	for i, r := range rs {
		b, err := resource.MarshalJSON(r)
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", resource.Ref(r), err)
		}
		docs[i] = b
	}
	resp, err := c.CreateResource(ctx, &authv1.CreateResourceRequest{Resources: docs, Force: force})
	if err != nil {
		return nil, err
	}
	return decodeAnswers(resp.GetResources())
}

// UpdateResource replaces r; its metadata.revision must be the stored one,
// so that a concurrent change is refused rather than lost.
func UpdateResource(ctx context.Context, c *client.Client, r resource.Resource) (resource.Resource, error) {
	b, err := resource.MarshalJSON(r)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", resource.Ref(r), err)
	}
	resp, err := c.UpdateResource(ctx, &authv1.UpdateResourceRequest{Resource: b})
	if err != nil {
		return nil, err
	}
	return decodeAnswer(resp.GetResource())
}

// DeleteResource removes kind/name.
func DeleteResource(ctx context.Context, c *client.Client, kind, name string) error {
	_, err := c.DeleteResource(ctx, &authv1.DeleteResourceRequest{Kind: kind, Name: name})
	return err
}

// DecodeResource reads a resource document the auth service sent.
func DecodeResource(data []byte) (resource.Resource, error) { return decodeAnswer(data) }

func decodeAnswer(data []byte) (resource.Resource, error) {
	r, err := resource.UnmarshalStored(data)
	if err != nil {
		return nil, &Error{Code: ExitError, Message: fmt.Sprintf("the auth service sent a resource this widctl cannot read (%v): use a widctl of the same version as widagent", err), Err: err}
	}
	return r, nil
}

func decodeAnswers(docs [][]byte) ([]resource.Resource, error) {
	out := make([]resource.Resource, 0, len(docs))
	for _, d := range docs {
		r, err := decodeAnswer(d)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// CreateOne creates r, replacing it when force, and prints it when the
// printer asks for a document (printed is then true; otherwise the
// command says what it made in its own words). The printer is opened
// before the connection, so that a bad --format fails without one.
func CreateOne(ctx context.Context, open func(context.Context) (*client.Client, error), printer func() (*output.Printer, error), force bool, r resource.Resource) (created resource.Resource, printed bool, err error) {
	p, err := printer()
	if err != nil {
		return nil, false, err
	}
	c, err := open(ctx)
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	out, err := CreateResources(ctx, c, force, r)
	if err != nil {
		return nil, false, err
	}
	if p.Format != output.Text {
		return out[0], true, p.Resource(out[0])
	}
	return out[0], false, nil
}
