// Command gendocs regenerates completions/ and man/ from the command trees
// of widctl and widagent. Run it from the repository root: go run ./tools/gendocs
// (make gen).
package main

import (
	"fmt"
	"os"

	"github.com/wid-project/wid/internal/cli/docgen"
)

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if _, err := os.Stat(dir + "/go.mod"); err != nil {
		fmt.Fprintf(os.Stderr, "error: %s is not the repository root (no go.mod): run go run ./tools/gendocs from the root\n", dir)
		os.Exit(2)
	}
	if err := docgen.Write(dir); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}
