package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage/location"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// restoreRepoHere picks the repository a restore run here reads backup id
// from. With --repo-preference, the first of its repositories that opens
// and holds the backup (each one tried in order, each failure said on
// stderr), so a restore reads a copy when the primary repository is
// unreachable; with a controller and no preference, the catalog's
// repository of the backup, then its copies, in that order. The key flags
// apply to whichever is chosen. Without either it leaves rf as it is.
func restoreRepoHere(ctx context.Context, s *streams, rf *repoFlags, controller, id string, prefs []string) error {
	if len(prefs) > 0 && rf.uri != "" {
		return &UserError{Msg: "give --repo URI or --repo-preference URI,URI, not both"}
	}
	if len(prefs) == 0 {
		if controller == "" || rf.uri != "" {
			return nil
		}
		b, err := catalogBackup(ctx, s, controller, id)
		if err != nil {
			return err
		}
		prefs = holders(b)
		if len(prefs) == 1 {
			rf.uri = prefs[0]
			return nil
		}
	}
	var tried []string
	for _, uri := range prefs {
		try := *rf
		try.uri = uri
		err := func() error {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			repo, closeRepo, err := try.open(octx)
			if err != nil {
				return err
			}
			defer closeRepo()
			_, err = repo.LoadManifest(octx, id)
			return err
		}()
		if err == nil {
			if len(tried) > 0 {
				fmt.Fprintf(s.err, "restoring backup %s from %s\n", id, location.Redact(uri))
			}
			rf.uri = uri
			return nil
		}
		fmt.Fprintf(s.err, "skipping %s: %v\n", location.Redact(uri), err)
		tried = append(tried, location.Redact(uri))
	}
	return &UserError{Msg: fmt.Sprintf("no repository of %s opens and holds backup %s; check the URIs, the key flags and the network", strings.Join(tried, ", "), id)}
}

// restoreRepoThere picks, for a restore job, the first repository of
// prefs that the catalog knows to hold the backup (its own or a recorded
// copy). Whether the agent reaches it is for the agent to find out.
func restoreRepoThere(ctx context.Context, s *streams, controller, id string, prefs []string) (string, error) {
	if len(prefs) == 0 {
		return "", nil
	}
	b, err := catalogBackup(ctx, s, controller, id)
	if err != nil {
		return "", err
	}
	have := holders(b)
	for _, p := range prefs {
		if slices.Contains(have, p) {
			return p, nil
		}
	}
	return "", &UserError{Msg: fmt.Sprintf("none of --repo-preference holds backup %s as the catalog knows it; it is in: %s", id, strings.Join(have, ", "))}
}

// holders are the repositories the catalog records a backup in: its own,
// then its copies, oldest first.
func holders(b *v1.Backup) []string {
	var out []string
	if b.GetRepositoryUri() != "" {
		out = append(out, b.GetRepositoryUri())
	}
	for _, c := range b.GetCopies() {
		if c.GetExpiredAt() == nil { // a copy being expired is not offered
			out = append(out, c.GetRepositoryUri())
		}
	}
	return out
}

func catalogBackup(ctx context.Context, s *streams, controller, id string) (*v1.Backup, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialController(ctx, s, controller)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	r, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: id})
	if err != nil {
		return nil, rpcErr(err)
	}
	b := r.GetBackup()
	if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
		return nil, &UserError{Msg: fmt.Sprintf("backup %s is %s, not complete", id, lower(b.GetStatus().String(), "BACKUP_STATUS_"))}
	}
	if len(holders(b)) == 0 {
		return nil, &UserError{Msg: fmt.Sprintf("the catalog does not record backup %s's repository (the agent used its own --repo); give --repo", id)}
	}
	return b, nil
}
