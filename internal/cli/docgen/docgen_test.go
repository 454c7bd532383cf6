package docgen

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func manFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	man := map[string][]byte{}
	for name, b := range files {
		if strings.HasPrefix(name, ManDir+"/") {
			man[name] = b
		}
	}
	if len(man) < 10 {
		t.Fatalf("only %d man pages", len(man))
	}
	return man
}

func noSourceDateEpoch(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	os.Unsetenv("SOURCE_DATE_EPOCH")
}

// Every page's synopsis is its command path and usage, and every option's
// text sits in a tagged paragraph instead of running into the flag's line.
func TestManPagesReadWell(t *testing.T) {
	noSourceDateEpoch(t)
	synopsisRE := regexp.MustCompile(`(?m)^\.SH SYNOPSIS\n\\fB(.*)\\fP$`)
	for name, b := range manFiles(t) {
		page := string(b)
		m := synopsisRE.FindStringSubmatch(page)
		if m == nil {
			t.Errorf("%s: no synopsis", name)
			continue
		}
		path := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(name, ManDir+"/"), ".1"), "-", `\-`)
		if syn := strings.ReplaceAll(m[1], " ", `\-`); !strings.HasPrefix(syn, path) || strings.Contains(m[1], "  ") {
			t.Errorf("%s: synopsis %q is not the command path and its usage", name, m[1])
		}
		if strings.Contains(page, "\n\t") {
			t.Errorf("%s: an option's text is tab-indented, which roff runs into the flag's line", name)
		}
		for _, l := range regexp.MustCompile(`(?m)^.*\n\\fB-.*\\fP.*$`).FindAllString(page, -1) {
			if !strings.HasPrefix(l, ".TP\n") {
				t.Errorf("%s: option not in a tagged paragraph:\n%s", name, l)
			}
		}
	}
}

// The date is SOURCE_DATE_EPOCH when set, else the release date: never the
// day make gen ran, so that the pages are reproducible.
func TestManDate(t *testing.T) {
	noSourceDateEpoch(t)
	want := `.TH "WIDCTL" "1" "` + ReleaseDate.Format("Jan 2006") + `"`
	if got := string(manFiles(t)[ManDir+"/widctl.1"]); !strings.Contains(got, want) {
		t.Fatalf("without SOURCE_DATE_EPOCH the page does not carry the release date %q:\n%.80s", want, got)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000") // 2023-11-14
	if got := string(manFiles(t)[ManDir+"/widctl.1"]); !strings.Contains(got, `"Nov 2023"`) {
		t.Fatalf("SOURCE_DATE_EPOCH=1700000000 is not Nov 2023:\n%.80s", got)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := Files(); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Fatalf("a bad SOURCE_DATE_EPOCH: %v, want an error naming it", err)
	}
}
