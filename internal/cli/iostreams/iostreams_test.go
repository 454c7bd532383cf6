package iostreams

import (
	"fmt"
	"testing"
)

func TestTestStreams(t *testing.T) {
	ios, in, out, errOut := Test()
	in.WriteString("input")
	fmt.Fprint(ios.Out, "o")
	fmt.Fprint(ios.ErrOut, "e")
	b := make([]byte, 5)
	if n, _ := ios.In.Read(b); string(b[:n]) != "input" || out.String() != "o" || errOut.String() != "e" {
		t.Error("streams are not the buffers returned")
	}
	if ios.IsStdoutTTY() {
		t.Error("test stdout claims to be a terminal")
	}
	ios.SetStdoutTTY(true)
	if !ios.IsStdoutTTY() {
		t.Error("SetStdoutTTY had no effect")
	}
}
