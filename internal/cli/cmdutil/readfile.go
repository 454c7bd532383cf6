package cmdutil

import (
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/wid-project/wid/internal/cli/iostreams"
)

// ReadFile reads a file the user named (- for stdin), refusing one over
// limit bytes; what names it in errors ("--cert", "file"). Every error is
// an input error of one sentence.
func ReadFile(ios *iostreams.IOStreams, what, name string, limit int64) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = ios.In
	} else {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, InputErrorf("%s %s does not exist: check the path", what, name)
		}
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, InputErrorf("cannot read %s %s: %v", what, name, err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, InputErrorf("cannot read %s %s: %v", what, name, err)
	}
	if int64(len(data)) > limit {
		return nil, InputErrorf("%s %s is over the limit of %d bytes", what, name, limit)
	}
	return data, nil
}
