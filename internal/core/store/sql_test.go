package store

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMigrationsApply(t *testing.T) {
	m := Migrations{{"a1", "a2"}, {"b1"}, {"c1"}}
	var ran []string
	exec := func(_ context.Context, stmt string) error { ran = append(ran, stmt); return nil }
	record := func(_ context.Context, v int) error { ran = append(ran, fmt.Sprint("v", v)); return nil }

	if err := m.Apply(context.Background(), 1, 2, exec, record); err != nil {
		t.Fatal(err)
	}
	if want := []string{"b1", "v2"}; !reflect.DeepEqual(ran, want) {
		t.Errorf("from 1 to 2 ran %q, want %q", ran, want)
	}
	ran = nil
	if err := m.Apply(context.Background(), 0, m.Version(), exec, record); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a1", "a2", "v1", "b1", "v2", "c1", "v3"}; !reflect.DeepEqual(ran, want) {
		t.Errorf("from 0 ran %q, want %q", ran, want)
	}
	ran = nil
	err := m.Apply(context.Background(), 4, 4, exec, record)
	if err == nil || !strings.Contains(err.Error(), "newer than the 3 this build of wid knows") || ran != nil {
		t.Errorf("a newer database: err = %v, ran %q; want a refusal and nothing run", err, ran)
	}
}

func TestAuditQuery(t *testing.T) {
	question := SQLDialect{
		Placeholder: func(int) string { return "?" },
		In: func(col string, vs []string, arg func(any) string) string {
			ps := make([]string, len(vs))
			for i, v := range vs {
				ps[i] = arg(v)
			}
			return col + " IN (" + strings.Join(ps, ", ") + ")"
		},
	}
	numbered := SQLDialect{
		Placeholder: func(n int) string { return fmt.Sprintf("$%d", n) },
		In:          func(col string, vs []string, arg func(any) string) string { return col + " = ANY(" + arg(vs) + ")" },
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	f := AuditFilter{Types: []string{"a", "b"}, Actor: "bot:web", Since: since, AfterSeq: 7, Limit: 10}

	q, args := AuditQuery(question, "seq", f)
	if want := "SELECT seq FROM audit_events WHERE type IN (?, ?) AND actor = ? AND time >= ? AND seq > ? ORDER BY seq DESC LIMIT ?"; q != want {
		t.Errorf("? query:\n got %s\nwant %s", q, want)
	}
	if want := []any{"a", "b", "bot:web", "2026-01-02T02:04:05.000000006Z", int64(7), 10}; !reflect.DeepEqual(args, want) {
		t.Errorf("? args = %#v, want %#v", args, want)
	}
	q, args = AuditQuery(numbered, "seq", f)
	if want := "SELECT seq FROM audit_events WHERE type = ANY($1) AND actor = $2 AND time >= $3 AND seq > $4 ORDER BY seq DESC LIMIT $5"; q != want {
		t.Errorf("$n query:\n got %s\nwant %s", q, want)
	}
	if len(args) != 5 || !reflect.DeepEqual(args[0], []string{"a", "b"}) {
		t.Errorf("$n args = %#v", args)
	}
	if q, args := AuditQuery(numbered, "seq", AuditFilter{}); q != "SELECT seq FROM audit_events ORDER BY seq" || args != nil {
		t.Errorf("no filter: %s %v", q, args)
	}
}

func TestCheckOps(t *testing.T) {
	ok := Op{Type: OpCreate, Item: Item{Kind: "role", Name: "web"}}
	if err := CheckOps([]Op{ok, {Type: OpDelete, Item: Item{Kind: "role", Name: "db"}}}); err != nil {
		t.Fatalf("a good batch: %v", err)
	}
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Type: OpCreate, Item: Item{Kind: "role"}}, "applying change 2: kind and name are required"},
		{Op{Type: OpDelete + 1, Item: Item{Kind: "role", Name: "x"}}, "applying change 2 to role/x: unknown operation"},
	} {
		if err := CheckOps([]Op{ok, tc.op}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.op, err, tc.want)
		}
	}
}
