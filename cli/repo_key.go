package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/internal/archive"
)

func newRepoKeyCmd(s *streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the passphrases and key files that open a repository, and rotate its data key",
		Long: `Every passphrase or key file of an encrypted repository unwraps the same repository
keys; any one of them opens it. Key material is never printed.

A format-1 repository (made by an older tidemark) is upgraded to format 2 by its first
key change; older tidemark versions then refuse it.`,
	}
	cmd.AddCommand(newRepoKeyListCmd(s), newRepoKeyAddCmd(s), newRepoKeyRemoveCmd(s), newRepoKeyRotateCmd(s))
	return cmd
}

func newRepoKeyListCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the repository's keys and data key generations (ids, kinds, dates; never key material)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			keys, err := repo.Keys()
			if err != nil {
				return userErr(err)
			}
			data, err := repo.DataKeys()
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(map[string]any{"keys": keys, "data_keys": data})
			}
			tw := tabwriter.NewWriter(s.out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tKIND\tCREATED\t")
			for _, k := range keys {
				note := ""
				if k.Opened {
					note = "(opened this time)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Kind, k.CreatedAt.Format(time.RFC3339), note)
			}
			fmt.Fprintln(tw, "\nDATA KEY\tCREATED\t\t")
			for _, d := range data {
				note := ""
				if d.Current {
					note = "(seals new data)"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t\n", d.Generation, d.CreatedAt.Format(time.RFC3339), note)
			}
			return tw.Flush()
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRepoKeyAddCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		nf     repoFlags // only its key and passphrase files
		output string
	)
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Add a passphrase or key file that opens the repository",
		Example: `  tidemark repo key add --repo URI --passphrase-file old.pass --new-key-file new.key
  head -c 32 /dev/urandom > new.key   # a key file: at least 32 random bytes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if nf.keyFile == "" && nf.passphraseFile == "" {
				return &UserError{Code: ExitUsage, Msg: "give the key to add: --new-key-file or --new-passphrase-file"}
			}
			sec, err := nf.secret()
			if err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			k, err := repo.AddKey(cmd.Context(), archive.AddKeyParams{Secret: sec})
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(k)
			}
			_, err = fmt.Fprintf(s.out, "added %s key %s\n", k.Kind, k.ID)
			return err
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&nf.keyFile, "new-key-file", "", "file holding the key to add (at least 32 random bytes)")
	cmd.Flags().StringVar(&nf.passphraseFile, "new-passphrase-file", "", "file holding the passphrase to add")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newRepoKeyRemoveCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "remove KEY-ID",
		Short: "Remove a key (the last one is refused); `repo key list` shows the ids",
		Long: `After removal the key no longer opens the repository's config as stored from now on.
It is not a revocation of an exposed key: whoever held it and kept a copy of an older
config can still unwrap the repository keys, and with them every data key, including
those added later (one root key wraps them all). For an exposed key, start a new
repository.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			if err := repo.RemoveKey(cmd.Context(), args[0]); err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(map[string]any{"removed": args[0]})
			}
			_, err = fmt.Fprintf(s.out, "removed key %s\n", args[0])
			return err
		},
	}
	rf.register(cmd)
	outputFlag(cmd, &output)
	return cmd
}

func newRepoKeyRotateCmd(s *streams) *cobra.Command {
	var (
		rf     repoFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new data key for data written from now on; nothing stored is rewritten",
		Long: `Adds a data key generation. Backups, binlog segments and manifests written after it are
sealed with the new key; everything older stays readable with its own. Processes that
opened the repository before (a running agent) keep the old key until they open it again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			repo, closeRepo, err := rf.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeRepo()
			d, err := repo.RotateDataKey(cmd.Context())
			if err != nil {
				return userErr(err)
			}
			if output == "json" {
				return json.NewEncoder(s.out).Encode(d)
			}
			_, err = fmt.Fprintf(s.out, "data key generation %d now seals new data\n", d.Generation)
			return err
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
