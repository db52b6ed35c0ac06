// Command tidemark-man writes the man pages of the tidemark command tree
// (one per command, section 1) into a directory: `make man` runs it.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra/doc"

	"github.com/tidemark-backup/tidemark/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: tidemark-man DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	root := cli.NewRoot(strings.NewReader(""), io.Discard, io.Discard)
	root.DisableAutoGenTag = true // no date: the pages change only with the commands
	hdr := &doc.GenManHeader{Title: "TIDEMARK", Section: "1", Source: "Tidemark", Manual: "Tidemark Manual"}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
