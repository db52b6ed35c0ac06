// Command tidemark is the agent, the controller and the command-line client.
package main

import (
	"os"

	"github.com/tidemark-backup/tidemark/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
