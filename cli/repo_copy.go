package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
)

func newRepoCopyCmd(s *streams) *cobra.Command {
	var (
		from, to   repoFlags
		withBinlog bool
		attempts   int
		backoff    time.Duration
		workers    int
		output     string
	)
	cmd := &cobra.Command{
		Use:   "copy --from URI --to URI BACKUP_ID",
		Short: "Copy a backup (and the binlog it needs) to another repository",
		Long: `Copy a complete backup from one repository to another: only the chunks the
destination lacks are stored, encrypted with the destination's keys, the
manifest last, and then the manifest and every chunk are checked in the
destination. The source is only read. A copy already there is verified and
left alone. A destination that fails is retried --attempts times with a
doubling --backoff, then the error is reported.

--with-binlog also copies the backup's instance's archived binlog from the
backup's consistency point on, so a point-in-time restore works from the
copy alone.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkOutput(output); err != nil {
				return err
			}
			if from.uri == "" || to.uri == "" {
				return &UserError{Msg: "--from URI and --to URI are both required"}
			}
			if location.Redact(from.uri) == location.Redact(to.uri) {
				return &UserError{Msg: "--from and --to name the same repository: a copy goes to another one"}
			}
			if attempts < 1 {
				return &UserError{Msg: "--attempts must be at least 1"}
			}
			if err := archive.ValidBackupID(args[0]); err != nil {
				return userErr(err)
			}
			src, closeSrc, err := from.open(ctx)
			if err != nil {
				return copySide("--from", err)
			}
			defer closeSrc()
			dst, closeDst, err := to.open(ctx)
			if err != nil {
				return copySide("--to", err)
			}
			defer closeDst()
			fmt.Fprintf(s.err, "copying backup %s from %s to %s\n", args[0], from.redacted(), to.redacted())
			p := newProgress(s.err, "copy")
			res, err := archive.CopyWithRetry(ctx, src, dst, archive.CopyParams{
				BackupID: args[0], Workers: workers,
				Progress: func(pr archive.Progress) { p.bytes("copying", pr.LogicalBytes, 0, 0) },
			}, archive.CopyRetry{Attempts: attempts, Backoff: backoff, OnRetry: func(n int, err error, wait time.Duration) {
				fmt.Fprintf(s.err, "attempt %d failed, retrying in %s: %v\n", n, wait, err)
			}})
			p.done()
			if err != nil {
				return userErr(err)
			}
			var segs *binlog.CopyResult
			if withBinlog {
				m := res.Manifest
				at := m.GetConsistency().GetTime()
				if !at.IsValid() {
					at = m.GetStartedAt()
				}
				segs, err = binlog.CopySegments(ctx, src, dst, binlog.CopyParams{Instance: m.GetInstance(), From: at.AsTime()})
				if errors.Is(err, binlog.ErrUnknownInstance) {
					fmt.Fprintf(s.err, "warning: the source holds no binlog archive of %s: none copied\n", m.GetInstance())
					err = nil
				}
				if err != nil {
					return userErr(fmt.Errorf("backup %s copied, its binlog not: %w", args[0], err))
				}
			}
			if output == "json" {
				out := map[string]any{
					"backup_id": args[0], "from": from.redacted(), "to": to.redacted(), "already_there": res.AlreadyThere,
					"chunks_read": res.ChunksRead, "chunks_skipped": res.ChunksSkipped, "uploaded_bytes": res.UploadedBytes,
					"chunks_verified": res.ChunksVerified,
				}
				if segs != nil {
					out["binlog"] = map[string]any{"segments": segs.Segments, "objects_copied": segs.Copied, "objects_present": segs.Present}
				}
				return json.NewEncoder(s.out).Encode(out)
			}
			if res.AlreadyThere {
				fmt.Fprintf(s.out, "backup %s was already in %s: %d chunks verified present\n", args[0], to.redacted(), res.ChunksVerified)
			} else {
				fmt.Fprintf(s.out, "backup %s copied: %d chunks read, %d not read (already there), %s uploaded, %d chunks verified\n",
					args[0], res.ChunksRead, res.ChunksSkipped, humanBytes(res.UploadedBytes), res.ChunksVerified)
			}
			if segs != nil {
				fmt.Fprintf(s.out, "binlog: %d segments, %d objects copied, %d already there\n", segs.Segments, segs.Copied, segs.Present)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from.uri, "from", "", "source repository URI")
	cmd.Flags().StringVar(&from.keyFile, "from-key-file", os.Getenv("TIDEMARK_KEY_FILE"), "key file of the source repository (env TIDEMARK_KEY_FILE)")
	cmd.Flags().StringVar(&from.passphraseFile, "from-passphrase-file", os.Getenv("TIDEMARK_PASSPHRASE_FILE"), "passphrase file of the source repository (env TIDEMARK_PASSPHRASE_FILE)")
	cmd.Flags().StringVar(&to.uri, "to", "", "destination repository URI (created with tidemark repo init)")
	cmd.Flags().StringVar(&to.keyFile, "to-key-file", "", "key file of the destination repository")
	cmd.Flags().StringVar(&to.passphraseFile, "to-passphrase-file", "", "passphrase file of the destination repository")
	cmd.Flags().BoolVar(&withBinlog, "with-binlog", false, "also copy the instance's binlog from the backup's consistency point on")
	cmd.Flags().IntVar(&attempts, "attempts", 5, "attempts before a failing destination is reported")
	cmd.Flags().DurationVar(&backoff, "backoff", 5*time.Second, "wait before the second attempt, doubled before each next one (at most 5m)")
	cmd.Flags().IntVar(&workers, "parallel", 0, "parallel uploads (default: by the destination's kind)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// copySide names the repository (--from or --to) an open error is about,
// and its own key flags instead of the single-repository ones.
func copySide(flag string, err error) error {
	msg := err.Error()
	var ue *UserError
	if errors.As(err, &ue) {
		msg = ue.Msg
	}
	msg = strings.NewReplacer("--key-file", flag+"-key-file", "--passphrase-file", flag+"-passphrase-file", "--repo URI", flag+" URI").Replace(msg)
	return &UserError{Msg: flag + " repository: " + msg, Err: err}
}
