package login

import (
	"strings"
	"testing"
)

func TestQRText(t *testing.T) {
	got, err := qrText("otpauth://totp/wid%20example.org:alice?secret=JBSWY3DPEHPK3PXP&issuer=wid")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	width := len([]rune(lines[0]))
	// A QR code is square: n modules wide, n/2 rows of half blocks, with the
	// quiet zone drawn as a full light row on top.
	if width < 21+4 || len(lines) != (width+1)/2 || strings.Trim(lines[0], "█") != "" {
		t.Fatalf("not a QR code with a quiet zone (%d wide, %d rows):\n%s", width, len(lines), got)
	}
	for i, l := range lines {
		if n := len([]rune(l)); n != width {
			t.Fatalf("row %d is %d wide, want %d", i, n, width)
		}
	}
	if !strings.ContainsAny(got, " ▀▄") {
		t.Fatal("no dark modules")
	}
}
