package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wid-project/wid/internal/core/resource"
	"github.com/wid-project/wid/internal/core/store"
)

// generationKind is the store kind of principals' generations: one item per
// user or bot, named "user/NAME" or "bot/NAME". A generation is a random
// value written when the principal is created (also again after a removal)
// and when a user is reset; every certificate carries the one it was
// issued under, and authentication refuses any other. It is kept apart from
// the resources so that no resource write, by anyone, can set it.
const generationKind = "principal_generation"

type generationDoc struct {
	Generation string `json:"generation"`
}

func generationName(kind, name string) string { return kind + "/" + name }

// generationOp writes a fresh generation for a user or bot.
func generationOp(kind, name string) (store.Op, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return store.Op{}, fmt.Errorf("generating a generation for %s %s: %w", kind, name, err)
	}
	data, err := json.Marshal(generationDoc{Generation: hex.EncodeToString(raw[:])})
	if err != nil {
		return store.Op{}, err
	}
	return store.Op{Type: store.OpUpsert, Item: store.Item{Kind: generationKind, Name: generationName(kind, name), Data: data}}, nil
}

// generation returns the current generation of a user or bot, "" for one
// created before generations existed (its certificates carry none either).
func (r *resources) generation(ctx context.Context, kind, name string) (string, error) {
	key := generationName(kind, name)
	r.mu.RLock()
	g, ok := r.gens[key]
	gen := r.cacheGen
	r.mu.RUnlock()
	if ok {
		return g, nil
	}
	it, err := r.db.Get(ctx, generationKind, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		g = ""
	case err != nil:
		return "", err
	default:
		var d generationDoc
		if err := json.Unmarshal(it.Data, &d); err != nil {
			return "", fmt.Errorf("stored generation of %s is corrupt: %w", key, err)
		}
		g = d.Generation
	}
	r.mu.Lock()
	if r.cacheGen == gen {
		r.gens[key] = g
	}
	r.mu.Unlock()
	return g, nil
}

// generationOps are the generation writes that go with ops: a fresh
// generation for each user or bot that ops create, and none left behind
// for those they delete. A replacement of an existing principal (an upsert)
// keeps its generation: it is the same principal, edited.
func (r *resources) generationOps(ctx context.Context, ops []store.Op) ([]store.Op, error) {
	var out []store.Op
	for _, o := range ops {
		kind, name := o.Item.Kind, o.Item.Name
		if kind != resource.KindUser && kind != resource.KindBot {
			continue
		}
		switch o.Type {
		case store.OpCreate:
		case store.OpUpsert:
			if _, err := r.db.Get(ctx, kind, name); err == nil {
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
		case store.OpDelete:
			if _, err := r.db.Get(ctx, generationKind, generationName(kind, name)); err == nil {
				out = append(out, store.Op{Type: store.OpDelete, Item: store.Item{Kind: generationKind, Name: generationName(kind, name)}})
			} else if !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			continue
		default:
			continue
		}
		g, err := generationOp(kind, name)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}
