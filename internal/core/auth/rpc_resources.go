package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	authv1 "github.com/wid-project/wid/api/auth/v1"
	"github.com/wid-project/wid/internal/core/audit"
	"github.com/wid-project/wid/internal/core/login"
	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Verbs of admin rules.
const (
	verbCreate = "create"
	verbRead   = "read"
	verbList   = "list"
	verbUpdate = "update"
	verbDelete = "delete"
)

// storeError turns a store error about ref into a status people can act on.
// meta (key, value, ...) is added to the next step a refusal names.
func storeError(ref string, err error, meta ...string) error {
	var corrupt *corruptError
	switch {
	case errors.As(err, &corrupt):
		return refusal(codes.DataLoss, corrupt.Error(), authv1.NextRemoveCorrupt, authv1.ErrorMetaKind, corrupt.kind, authv1.ErrorMetaName, corrupt.name)
	case errors.Is(err, store.ErrNotFound):
		return refusal(codes.NotFound, ref+" does not exist", authv1.NextList, append(refMeta(ref), meta...)...)
	case errors.Is(err, store.ErrAlreadyExists):
		return refusal(codes.AlreadyExists, ref+" already exists", authv1.NextReplace, append(refMeta(ref), meta...)...)
	case errors.Is(err, store.ErrConflict):
		return status.Errorf(codes.Aborted, "%s changed while you were editing it: read it again and retry", ref)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if errors.Is(err, store.ErrUnavailable) {
		return lookupError(ref, err)
	}
	if reason, ok := storageReason(err); ok {
		return withReason(status.Newf(codes.Unavailable, "%s was not stored: the store could not be written (%s): an admin must fix the auth service's data dir; then try again", ref, reason), authv1.ErrorReasonStorage)
	}
	return status.Errorf(codes.Internal, "storing %s: %v", ref, err)
}

// lookupError is a failed read behind what (e.g. checking a caller): the
// database out of reach is said as such, Unavailable, so the caller tries
// again or another replica; anything else is an internal error.
func lookupError(what string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return withReason(status.Newf(codes.Unavailable, "%s: the auth service cannot reach its database, so nothing was changed: try again shortly, or through another replica (%v)", what, err), authv1.ErrorReasonStorage)
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}

// encode returns a resource's wire document, without secrets.
func encode(v resource.Resource) ([]byte, error) {
	if t, ok := v.(*resource.JoinToken); ok {
		c := *t
		c.Spec.SecretHash = ""
		v = &c
	}
	return json.Marshal(v)
}

func decodeRequest(data []byte) (resource.Resource, error) {
	v, err := resource.Unmarshal(data)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// A kubernetes or x509pop join token holds no secret, so it is an
	// ordinary resource; a secret token is made only by the auth service.
	if t, ok := v.(*resource.JoinToken); ok && t.Spec.Method != resource.JoinMethodKubernetes && t.Spec.Method != resource.JoinMethodX509Pop {
		return nil, refusal(codes.InvalidArgument, "join tokens are made by the auth service so that their secret is never stored", authv1.NextTokenFromCommand)
	}
	// A user's status is the auth service's to say: one sent back with a
	// document read earlier is dropped, not stored.
	if u, ok := v.(*resource.User); ok {
		u.Status = nil
	}
	if f, ok := v.(*resource.Federation); ok {
		f.Status = nil
	}
	return v, nil
}

func (s *Server) resourceEvent(ctx context.Context, typ, ref string, details map[string]string) error {
	c := callerFrom(ctx)
	_, err := s.audit.Emit(ctx, audit.Event{
		Type: typ, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr,
		Outcome: audit.OutcomeSuccess, Resource: ref, Details: details,
	})
	if err != nil {
		return status.Errorf(codes.Unavailable, "the change to %s was made but could not be audited: %v", ref, err)
	}
	return nil
}

func (s *Server) CreateResource(ctx context.Context, req *authv1.CreateResourceRequest) (*authv1.CreateResourceResponse, error) {
	if len(req.Resources) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no resources given: the file holds no documents")
	}
	var (
		list    []resource.Resource
		ops     []store.Op
		pending = map[string]bool{}
		seen    = map[string]bool{}
	)
	for i, data := range req.Resources {
		v, err := decodeRequest(data)
		if err != nil {
			if len(req.Resources) > 1 {
				return nil, withPrefix(fmt.Sprintf("document %d: ", i+1), err)
			}
			return nil, err
		}
		ref := resource.Ref(v)
		if seen[ref] {
			return nil, status.Errorf(codes.InvalidArgument, "%s appears twice: keep one", ref)
		}
		seen[ref] = true
		if err := s.authorize(ctx, v.GetKind(), verbCreate); err != nil {
			return nil, err
		}
		t := store.OpCreate
		if req.Force {
			if err := s.authorize(ctx, v.GetKind(), verbUpdate); err != nil {
				return nil, err
			}
			t = store.OpUpsert
		}
		if v.GetKind() == resource.KindRole {
			pending[v.GetMetadata().Name] = true
		}
		if v.GetKind() == resource.KindBot {
			// Role names have no slash, so bots cannot clash with them.
			pending["bot/"+v.GetMetadata().Name] = true
		}
		v.GetMetadata().Revision = 0
		o, err := op(t, v)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		list = append(list, v)
		ops = append(ops, o)
	}
	pendingRoles, pendingBots := map[string]*resource.Role{}, map[string]*resource.Bot{}
	for _, v := range list {
		switch t := v.(type) {
		case *resource.Role:
			pendingRoles[t.Metadata.Name] = t
		case *resource.Bot:
			pendingBots[t.Metadata.Name] = t
		}
	}
	for _, v := range list {
		if err := s.res.checkRolesExist(ctx, v, pending); err != nil {
			return nil, precondition(err)
		}
		if err := s.checkResourceGrantable(ctx, v, pendingRoles, pendingBots); err != nil {
			return nil, err
		}
		if err := s.checkKubernetesCluster(v); err != nil {
			return nil, err
		}
		if err := s.checkFederation(ctx, v); err != nil {
			return nil, err
		}
		if err := s.checkLockResource(ctx, v); err != nil {
			return nil, err
		}
	}
	// A lock's creator was set by the check: the ops are made again.
	for i, v := range list {
		if v.GetKind() == resource.KindLock {
			o, err := op(ops[i].Type, v)
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			ops[i] = o
		}
	}
	// What the locks cover is revoked with them; these ops go after the
	// documents', so that ops[i] stays list[i].
	revoked, rops, err := s.lockRevocationOps(ctx, list)
	if err != nil {
		return nil, err
	}
	revs, err := s.res.apply(ctx, append(ops, rops...)...)
	if err != nil {
		// The store says which op failed; ops[i] is list[i].
		ref := "resources"
		var (
			oe   *store.OpError
			meta []string
		)
		if len(list) == 1 {
			ref = resource.Ref(list[0])
		} else if errors.As(err, &oe) && oe.Index >= 0 && oe.Index < len(list) {
			ref = resource.Ref(list[oe.Index])
			meta = []string{authv1.ErrorMetaDocument, strconv.Itoa(oe.Index + 1)}
		}
		return nil, storeError(ref, err, meta...)
	}
	resp := &authv1.CreateResourceResponse{}
	// One event per resource, queued together so that a file of a thousand
	// documents is audited in a few commits rather than a thousand.
	c := callerFrom(ctx)
	events := make([]audit.Event, len(list))
	for i, v := range list {
		v.GetMetadata().Revision = revs[i]
		events[i] = audit.Event{
			Type: audit.TypeResourceCreated, Actor: c.Actor(s), Host: s.host, RemoteAddr: c.RemoteAddr,
			Outcome: audit.OutcomeSuccess, Resource: resource.Ref(v), Details: map[string]string{"forced": fmt.Sprint(req.Force)},
		}
	}
	if _, err := s.audit.EmitAll(ctx, events); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the resources were created but could not be audited: %v", err)
	}
	for _, b := range revoked {
		if err := s.auditRevocations(ctx, b, "the lock"); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	for _, v := range list {
		b, err := encode(v)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Resources = append(resp.Resources, b)
	}
	return resp, nil
}

func (s *Server) GetResource(ctx context.Context, req *authv1.GetResourceRequest) (*authv1.GetResourceResponse, error) {
	kind, err := resource.NormalizeKind(req.Kind)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// Everyone may read the roles they hold: widctl status shows what they grant.
	if !(kind == resource.KindRole && slices.Contains(callerFrom(ctx).roleNames(), req.Name)) {
		if err := s.authorize(ctx, kind, verbRead); err != nil {
			return nil, err
		}
	}
	v, err := s.res.get(ctx, kind, req.Name)
	if err != nil {
		return nil, storeError(kind+"/"+req.Name, err)
	}
	if err := s.addUserStatus(ctx, v); err != nil {
		return nil, err
	}
	if err := s.addFederationStatus(ctx, v); err != nil {
		return nil, err
	}
	b, err := encode(v)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &authv1.GetResourceResponse{Resource: b}, nil
}

// List pages: an answer holds at most listPageSize resources and about
// listPageBytes of them, well under gRPC's 4 MiB message limit, so that no
// number of resources outgrows one message.
const (
	listPageSize    = 1000
	maxListPageSize = 5000
	listPageBytes   = 1 << 20
)

// ListResources answers one page, in name order. The page token is the
// last name sent: the next page starts after it, so resources created or
// removed between two pages neither repeat nor shift the others.
func (s *Server) ListResources(ctx context.Context, req *authv1.ListResourcesRequest) (*authv1.ListResourcesResponse, error) {
	kind, err := resource.NormalizeKind(req.Kind)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.authorize(ctx, kind, verbList); err != nil {
		return nil, err
	}
	size := int(req.PageSize)
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page size %d is negative: give a positive number, or 0 for the default", size)
	case size == 0:
		size = listPageSize
	case size > maxListPageSize:
		size = maxListPageSize
	}
	after, err := decodePageToken(req.PageToken)
	if err != nil {
		return nil, err
	}
	// Only the page's documents are read and decoded, so that listing a
	// large kind page by page costs about the same per page.
	items, err := listAfter(ctx, s.db, kind, after, size+1)
	if err != nil {
		return nil, storeError(kind, err)
	}
	resp := &authv1.ListResourcesResponse{}
	n, bytes := 0, 0
	for _, it := range items {
		if n > 0 && (n >= size || bytes+len(it.Data) > listPageBytes) {
			resp.NextPageToken = encodePageToken(items[n-1].Name)
			break
		}
		n++
		bytes += len(it.Data)
		v, err := decodeItem(it)
		var corrupt *corruptError
		if errors.As(err, &corrupt) {
			// Left out and named, so that one damaged document does not
			// hide every other one of its kind.
			s.res.report(corrupt)
			resp.Corrupt = append(resp.Corrupt, &authv1.CorruptResource{Kind: corrupt.kind, Name: corrupt.name, Error: corrupt.err.Error()})
			continue
		}
		if err != nil {
			return nil, storeError(kind, err)
		}
		if err := s.addUserStatus(ctx, v); err != nil {
			return nil, err
		}
		if err := s.addFederationStatus(ctx, v); err != nil {
			return nil, err
		}
		b, err := encode(v)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Resources = append(resp.Resources, b)
	}
	return resp, nil
}

// pageLister is a store that reads one page of a kind by itself; others
// are listed whole and sliced.
type pageLister interface {
	ListAfter(ctx context.Context, kind, after string, limit int) ([]store.Item, error)
}

// listAfter returns up to limit items of kind named after after, in name order.
func listAfter(ctx context.Context, db store.Backend, kind, after string, limit int) ([]store.Item, error) {
	if p, ok := db.(pageLister); ok {
		return p.ListAfter(ctx, kind, after, limit)
	}
	items, err := db.List(ctx, kind)
	if err != nil {
		return nil, err
	}
	start, _ := slices.BinarySearchFunc(items, after, func(it store.Item, name string) int {
		return strings.Compare(it.Name, name)
	})
	if start < len(items) && items[start].Name == after {
		start++
	}
	return items[start:min(len(items), start+limit)], nil
}

// maxPageToken bounds what a caller may send as a page token.
const maxPageToken = 512

// A page token is the last name of the page, base64 so that it reads as
// opaque and callers do not build their own.
func encodePageToken(name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(name))
}

func decodePageToken(tok string) (string, error) {
	if len(tok) > maxPageToken {
		return "", status.Errorf(codes.InvalidArgument, "the page token is over %d bytes: pass back the next_page_token of the previous answer", maxPageToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, "the page token is malformed: pass back the next_page_token of the previous answer")
	}
	return string(b), nil
}

func (s *Server) UpdateResource(ctx context.Context, req *authv1.UpdateResourceRequest) (*authv1.UpdateResourceResponse, error) {
	v, err := decodeRequest(req.Resource)
	if err != nil {
		return nil, err
	}
	ref := resource.Ref(v)
	if err := s.authorize(ctx, v.GetKind(), verbUpdate); err != nil {
		return nil, err
	}
	if err := s.res.checkRolesExist(ctx, v, nil); err != nil {
		return nil, precondition(err)
	}
	if err := s.checkResourceGrantable(ctx, v, nil, nil); err != nil {
		return nil, err
	}
	if err := s.checkKubernetesCluster(v); err != nil {
		return nil, err
	}
	if err := s.checkFederation(ctx, v); err != nil {
		return nil, err
	}
	if err := s.checkLockResource(ctx, v); err != nil {
		return nil, err
	}
	o, err := op(store.OpUpdate, v)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	revoked, rops, err := s.lockRevocationOps(ctx, []resource.Resource{v})
	if err != nil {
		return nil, err
	}
	revs, err := s.res.apply(ctx, append([]store.Op{o}, rops...)...)
	if err != nil {
		return nil, storeError(ref, err)
	}
	v.GetMetadata().Revision = revs[0]
	if err := s.resourceEvent(ctx, audit.TypeResourceUpdated, ref, nil); err != nil {
		return nil, err
	}
	for _, b := range revoked {
		if err := s.auditRevocations(ctx, b, "the lock"); err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
	}
	b, err := encode(v)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &authv1.UpdateResourceResponse{Resource: b}, nil
}

func (s *Server) DeleteResource(ctx context.Context, req *authv1.DeleteResourceRequest) (*authv1.DeleteResourceResponse, error) {
	kind, err := resource.NormalizeKind(req.Kind)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ref := kind + "/" + req.Name
	if err := s.authorize(ctx, kind, verbDelete); err != nil {
		return nil, err
	}
	ops := []store.Op{{Type: store.OpDelete, Item: store.Item{Kind: kind, Name: req.Name}}}
	switch kind {
	case resource.KindRole:
		holders, err := s.res.holders(ctx, req.Name)
		if err != nil {
			return nil, storeError(ref, err)
		}
		if len(holders) > 0 {
			return nil, refusal(codes.FailedPrecondition, fmt.Sprintf("role %s is held by %s", req.Name, strings.Join(holders, ", ")), authv1.NextFreeRole, authv1.ErrorMetaKind, resource.KindRole, authv1.ErrorMetaName, req.Name)
		}
	case resource.KindUser:
		// A user's password and invite go with it, in the same transaction.
		if _, err := s.db.Get(ctx, login.CredentialKind, req.Name); err == nil {
			ops = append(ops, store.Op{Type: store.OpDelete, Item: store.Item{Kind: login.CredentialKind, Name: req.Name}})
		}
	case resource.KindFederation:
		// The fetched bundle goes with it, so that a federation made again
		// under the same name trusts only what it is created with.
		if _, err := s.db.Get(ctx, federatedBundleKind, req.Name); err == nil {
			ops = append(ops, store.Op{Type: store.OpDelete, Item: store.Item{Kind: federatedBundleKind, Name: req.Name}})
		}
	case resource.KindBot:
		// A bot's join tokens go with it, in the same transaction.
		tokens, err := s.res.list(ctx, resource.KindJoinToken)
		if err != nil {
			return nil, storeError(ref, err)
		}
		for _, t := range tokens {
			if t.(*resource.JoinToken).Spec.Bot == req.Name {
				ops = append(ops, store.Op{Type: store.OpDelete, Item: store.Item{Kind: resource.KindJoinToken, Name: t.GetMetadata().Name}})
			}
		}
	}
	// Removing a user or bot revokes its current certificates, in the
	// same transaction.
	var revoked *revocationBatch
	if kind == resource.KindUser || kind == resource.KindBot {
		pk, cause := KindUser, causeUserRemoved
		if kind == resource.KindBot {
			pk, cause = KindBot, causeBotRemoved
		}
		if revoked, err = s.principalRevocations(ctx, pk, req.Name); err != nil {
			return nil, storeError("the certificates of "+ref, err)
		}
		rops, err := revoked.ops(s.clock(), "", cause)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		ops = append(ops, rops...)
	}
	if _, err := s.res.apply(ctx, ops...); err != nil {
		return nil, storeError(ref, err)
	}
	if err := s.resourceEvent(ctx, audit.TypeResourceDeleted, ref, nil); err != nil {
		return nil, err
	}
	if err := s.auditRevocations(ctx, revoked, "the removal of "+ref); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &authv1.DeleteResourceResponse{}, nil
}
