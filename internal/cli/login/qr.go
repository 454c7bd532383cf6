package login

import (
	"image/color"
	"strings"

	"github.com/boombuler/barcode/qr"
)

// qrText draws s as a QR code in half blocks, two modules a character row.
// Light modules (and a 2-module quiet zone) are drawn and dark ones left as
// the background, which reads right on the usual dark terminal.
func qrText(s string) (string, error) {
	code, err := qr.Encode(s, qr.M, qr.Auto)
	if err != nil {
		return "", err
	}
	size := code.Bounds().Dx()
	const quiet = 2
	light := func(x, y int) bool {
		x, y = x-quiet, y-quiet
		if x < 0 || y < 0 || x >= size || y >= size {
			return true
		}
		return color.GrayModel.Convert(code.At(x, y)).(color.Gray).Y > 0x7f
	}
	n := size + 2*quiet
	var b strings.Builder
	for y := 0; y < n; y += 2 {
		for x := range n {
			top, bottom := light(x, y), y+1 < n && light(x, y+1)
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}
