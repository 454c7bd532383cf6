package resource

import (
	"strings"
	"testing"
)

func TestValidateDNSSAN(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"foo.example.com", ""},
		{"*.example.com", ""},
		{"Foo.Example.COM", ""},
		{"localhost", ""},
		{"a-b.c1", ""},
		{strings.Repeat("a", 63) + ".com", ""},
		{"", "is empty"},
		{"*", "would allow every name"},
		{"foo.*.com", "has a * that is not the whole leftmost label"},
		{"*foo.example.com", "has a * that is not the whole leftmost label"},
		{"f*o.example.com", "has a * that is not the whole leftmost label"},
		{"*.*.example.com", "has a * that is not the whole leftmost label"},
		{"**.example.com", "has a * that is not the whole leftmost label"},
		{"example.com.", `ends with ".": remove the trailing dot`},
		{"a..b", "has an empty label"},
		{".a.b", "has an empty label"},
		{"-a.com", `starts or ends with "-"`},
		{"a-.com", `starts or ends with "-"`},
		{"a_b.com", `has the character '_'`},
		{"a b.com", `has the character ' '`},
		{"bücher.de", `has the character 'ü'`},
		{strings.Repeat("a", 64) + ".com", "longer than the 63 bytes"},
		{strings.Repeat("abcdefghi.", 26) + "com", "over the 253 bytes"},
		{"10.0.0.1", "is an IP address: put it in ip_sans instead"},
		{"::1", "is an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name[:min(len(tt.name), 40)], func(t *testing.T) {
			checkErr(t, ValidateDNSSAN(tt.name), tt.wantErr)
		})
	}
}

func TestParseIPRange(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3", want: "10.1.2.3/32"},
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "fd00::/8", want: "fd00::/8"},
		{in: "::1", want: "::1/128"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"},
		{in: "10.0.0.1/8", wantErr: `IP range "10.0.0.1/8" has bits set after the prefix length: write 10.0.0.0/8`},
		{in: "10.0.0.0/33", wantErr: "is not a CIDR"},
		{in: "10.0.0/8", wantErr: "is not a CIDR"},
		{in: "::ffff:10.0.0.0/104", wantErr: "is an IPv4 range written as IPv6"},
		{in: "300.1.1.1", wantErr: "is neither an IP address nor a CIDR"},
		{in: "fe80::1%eth0", wantErr: `has a zone, which certificates cannot carry: write it without %eth0`},
		{in: "example.com", wantErr: "is neither an IP address nor a CIDR"},
		{in: "", wantErr: "is neither an IP address nor a CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseIPRange(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && p.String() != tt.want {
				t.Errorf("ParseIPRange(%q) = %s, want %s", tt.in, p, tt.want)
			}
		})
	}
}
