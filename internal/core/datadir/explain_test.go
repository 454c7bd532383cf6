package datadir_test

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/wid-project/wid/internal/core/datadir"
)

func TestExplainSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		err  error
		want []string
	}{
		{&os.PathError{Op: "chmod", Path: dir, Err: syscall.EROFS}, []string{"read-only file system", "mount it read-write", "--data-dir"}},
		{&os.PathError{Op: "open", Path: dir + "/wid.db", Err: syscall.EACCES}, []string{"cannot be used by uid", "run widagent as its owner", "chown"}},
		{&os.PathError{Op: "chmod", Path: dir, Err: syscall.EPERM}, []string{"cannot be used by uid", "chown"}},
		{&os.PathError{Op: "write", Path: dir + "/lock", Err: syscall.ENOSPC}, []string{"no space left", "free space"}},
	}
	for _, tc := range cases {
		err := datadir.Explain(dir, "securing it", tc.err)
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q does not say %q", tc.err, err, w)
			}
		}
		if !errors.Is(err, tc.err.(*os.PathError).Err) {
			t.Errorf("the cause is lost: %v", err)
		}
	}
}
