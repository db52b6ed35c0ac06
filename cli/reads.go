package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// registerRead is register for a command that reads the catalog: it adds
// --stale.
func (f *fleetFlags) registerRead(s *streams, cmd *cobra.Command) {
	f.register(s, cmd)
	cmd.Flags().BoolVar(&f.stale, "stale", false, "read the catalog of the first controller that answers, without going through the leader: faster and possible without a quorum, but it may miss recent writes; a line on stderr says how far behind the node was")
}

// read runs fn, a read of the catalog. A consistent read (the default) is
// served by the leader, so it sees every write that finished before the
// command started: the read goes to the leader directly, and when a node
// answers Unavailable (an election, a leader just killed, no quorum) it is
// tried again, on whichever node leads then, with backoff until --timeout;
// the error then names every node tried and what it said. When no address
// answers at all the first time, that is the error at once. One attempt
// gets at most half of --timeout (at least 3 s). With --stale,
// fn runs once against the first node that answers.
//
// fn must print nothing before its last call succeeded: it may run more
// than once.
func (f *fleetFlags) read(ctx context.Context, fn func(context.Context, *client.Conn) error) error {
	if f.stale {
		return f.call(ctx, fn)
	}
	if err := checkOutput(f.output); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var (
		tried []string
		last  error
	)
	backoff := 100 * time.Millisecond
	for {
		c, err := dialLeader(ctx, f.s, f.controller)
		what := ""
		if err == nil {
			// One attempt may not use all of --timeout: a leader stopped
			// mid-read keeps the connection open and silent.
			actx, cancel := context.WithTimeout(ctx, max(f.timeout/2, 3*time.Second))
			err = fn(actx, c)
			cancel()
			what = c.Addr
			if c.NodeID != "" {
				what = c.NodeID + " (" + c.Addr + ")"
			}
			_ = c.Close()
			if err == nil {
				return nil
			}
			what += ": " + status.Convert(err).Message()
		} else {
			if len(tried) == 0 {
				// No node answers at all: no election explains that.
				return err
			}
			what = strings.TrimPrefix(err.Error(), "no Tidemark controller answers: ")
		}
		if !retryableRead(err) {
			return err
		}
		tried, last = appendTried(tried, what), err
		if ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			backoff = min(2*backoff, time.Second)
			continue
		}
		break
	}
	msg := fmt.Sprintf("no consistent read within %s (the cluster has no leader, or it cannot reach a quorum): %s", f.timeout, strings.Join(tried, "; "))
	if !strings.Contains(msg, "--stale") {
		msg += "; --stale reads one node's catalog as it is"
	}
	return &UserError{Msg: msg, Err: last}
}

// appendTried keeps one entry per distinct failure, in order.
func appendTried(tried []string, what string) []string {
	for _, t := range tried {
		if t == what {
			return tried
		}
	}
	return append(tried, what)
}

// retryableRead: the read may succeed on another node or a little later.
func retryableRead(err error) bool {
	var ue *UserError
	if errors.As(err, &ue) && ue.Code == ExitUsage {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return client.Retryable(err)
}

// noteRead reports how a read was served, for a stale read only (a
// consistent one needs no note): one line on stderr saying the answer is
// stale and how far behind the node was; with -o json, that as one JSON
// object, {"read": {...}}, on stderr (stdout keeps the shape scripts parse).
func (f *fleetFlags) noteRead(info *v1.ReadInfo) {
	if info == nil || !info.GetStale() {
		return
	}
	if f.output == "json" {
		_ = json.NewEncoder(f.s.err).Encode(map[string]any{"read": readInfoJSON(info)})
		return
	}
	fmt.Fprintln(f.s.err, readInfoText(info))
}

// readInfoJSON is a ReadInfo as the CLI prints it with -o json.
func readInfoJSON(info *v1.ReadInfo) map[string]any {
	out := map[string]any{
		"node_id": info.GetNodeId(), "stale": info.GetStale(), "leader_id": info.GetLeaderId(),
		"applied_index": info.GetAppliedIndex(), "commit_index": info.GetCommitIndex(),
		"entries_behind": entriesBehind(info), "last_leader_contact": tsJSON(info.GetLastLeaderContact()),
	}
	if d := info.GetSinceLeaderContact(); d != nil {
		out["since_leader_contact_seconds"] = d.AsDuration().Seconds()
	} else {
		out["since_leader_contact_seconds"] = nil
	}
	return out
}

func entriesBehind(info *v1.ReadInfo) uint64 {
	if info.GetCommitIndex() > info.GetAppliedIndex() {
		return info.GetCommitIndex() - info.GetAppliedIndex()
	}
	return 0
}

// readInfoText is the stderr line of a stale read: "stale read from node
// c2 (leader c1, last heard from 3.2s ago): applied index 120, 5 committed
// entries behind".
func readInfoText(info *v1.ReadInfo) string {
	node := info.GetNodeId()
	var who string
	switch {
	case info.GetLeaderId() == node:
		who = "the leader"
	case info.GetLeaderId() == "" && info.GetSinceLeaderContact() == nil:
		who = "no leader known, never heard from one"
	case info.GetLeaderId() == "":
		who = fmt.Sprintf("no leader known; last heard from one %s ago", info.GetSinceLeaderContact().AsDuration().Round(time.Millisecond))
	case info.GetSinceLeaderContact() == nil:
		who = "leader " + info.GetLeaderId()
	default:
		who = fmt.Sprintf("leader %s, last heard from %s ago", info.GetLeaderId(), info.GetSinceLeaderContact().AsDuration().Round(time.Millisecond))
	}
	return fmt.Sprintf("stale read from node %s (%s): applied index %d, %d committed entries behind (as far as it knows); without --stale the leader answers",
		node, who, info.GetAppliedIndex(), entriesBehind(info))
}
