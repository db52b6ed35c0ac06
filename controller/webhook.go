package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Alerts. While a node leads, alertLoop evaluates the policies every
// Config.StatusInterval and compares with the previous evaluation: an
// instance newly failing a policy, an RPO newly above its target, a binlog
// stream's runs newly failing, and a job newly failed each become one
// Alert, POSTed as JSON to every --webhook URL, retried with backoff. The
// first evaluation of a leadership is the baseline and sends nothing, so a
// leader change neither repeats the alerts of the old leader nor sends
// those of a state that did not change; a change during the election
// itself may go unreported (at most once, not exactly once).
//
// Binlog gaps are alerted from the catalog instead: every gap a stream
// record holds whose alerted_at is unset is sent (baseline or not), and
// once its delivery ended (delivered, or every attempt failed) the leader
// commits MarkBinlogGapsAlerted, so each gap is sent once; a leader lost
// between the two makes the next one send it again (at least once).

// Alert is the JSON body of a webhook call.
type Alert struct {
	// "job_failed", "rpo_breach", "binlog_gap", "binlog_stream_failing" or
	// "policy_unmet".
	Kind     string    `json:"kind"`
	Policy   string    `json:"policy,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Job      string    `json:"job,omitempty"`
	Message  string    `json:"message"`
	At       time.Time `json:"at"`
	// The controller node that sent it.
	Node string `json:"node"`
	// The missing range (binlog_gap only).
	Gap *GapAlert `json:"gap,omitempty"`
}

// GapAlert is a binlog gap in an alert: the archive holds the binlog up to
// After and again from Before (GTID and file:pos as the engine prints them),
// with the server times of the events on either side.
type GapAlert struct {
	After      string     `json:"after"`
	Before     string     `json:"before"`
	AfterGTID  string     `json:"after_gtid,omitempty"`
	BeforeGTID string     `json:"before_gtid,omitempty"`
	FromTime   *time.Time `json:"from_time,omitempty"`
	ToTime     *time.Time `json:"to_time,omitempty"`
	DetectedAt *time.Time `json:"detected_at,omitempty"`
	Reason     string     `json:"reason"`
}

// Alert kinds.
const (
	AlertJobFailed   = "job_failed"
	AlertRPOBreach   = "rpo_breach"
	AlertBinlogGap   = "binlog_gap"
	AlertPolicyUnmet = "policy_unmet"
	// AlertStreamFailing: a stream's runs started failing (status reason
	// "binlog stream failing"); no binlog is missing yet.
	AlertStreamFailing = "binlog_stream_failing"
)

func gapAlert(stream string, g *v1.BinlogGap, now time.Time) Alert {
	return Alert{Kind: AlertBinlogGap, Instance: stream, At: now,
		Message: fmt.Sprintf("binlog stream %s: %s", stream, scheduler.GapText(g)),
		Gap: &GapAlert{After: g.GetAfter(), Before: g.GetBefore(), AfterGTID: g.GetAfterGtid(), BeforeGTID: g.GetBeforeGtid(),
			FromTime: timePtr(g.GetFromTime()), ToTime: timePtr(g.GetToTime()), DetectedAt: timePtr(g.GetDetectedAt()), Reason: g.GetReason()}}
}

func timePtr(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime().UTC()
	return &v
}

// webhook delivery: attempts per URL and the backoff between them.
const (
	webhookAttempts   = 5
	webhookBackoffMin = 200 * time.Millisecond
	webhookBackoffMax = 5 * time.Second
	webhookTimeout    = 10 * time.Second
	webhookQueue      = 1024
)

func checkWebhookURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return err
	}
	if p.Scheme != "http" && p.Scheme != "https" {
		return fmt.Errorf("want an http:// or https:// URL")
	}
	if p.Host == "" {
		return fmt.Errorf("no host")
	}
	return nil
}

type webhooks struct {
	urls   []string
	log    *slog.Logger
	client *http.Client
}

func newWebhooks(urls []string, log *slog.Logger) *webhooks {
	return &webhooks{urls: urls, log: log, client: &http.Client{Timeout: webhookTimeout}}
}

// send delivers one alert to every URL, each retried with backoff up to
// webhookAttempts times or until ctx ends.
func (w *webhooks) send(ctx context.Context, a Alert) {
	body, err := json.Marshal(a)
	if err != nil {
		w.log.Error("webhook: encoding an alert", "err", err)
		return
	}
	for _, u := range w.urls {
		backoff := webhookBackoffMin
		for attempt := 1; ; attempt++ {
			err := w.post(ctx, u, body)
			if err == nil {
				break
			}
			if attempt == webhookAttempts || ctx.Err() != nil {
				w.log.Warn("webhook: alert not delivered", "url", u, "kind", a.Kind, "attempts", attempt, "err", err)
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, webhookBackoffMax)
		}
	}
}

func (w *webhooks) post(ctx context.Context, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	return nil
}

// alertLoop evaluates the policies and sends alerts while the node leads.
// failedSlack is how far before the newest finish time seen the alert
// loop looks again for failed jobs: a job's finish time is stamped by the
// leader that proposed it, and an entry stamped a little earlier can be
// applied after one stamped later.
const failedSlack = 5 * time.Minute

func (s *Server) alertLoop(ctx context.Context) {
	if len(s.cfg.Webhooks) == 0 {
		return
	}
	type queued struct {
		a     Alert
		after func() // run once the delivery ended; may be nil
	}
	queue := make(chan queued, webhookQueue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case q := <-queue:
				s.hooks.send(ctx, q.a)
				if q.after != nil && ctx.Err() == nil {
					q.after()
				}
			}
		}
	}()
	defer func() { <-done }()
	emitThen := func(a Alert, after func()) bool {
		a.Node = s.id.NodeID
		select {
		case queue <- queued{a, after}:
			return true
		default:
			s.log.Warn("webhook: queue full; alert dropped", "kind", a.Kind, "policy", a.Policy, "instance", a.Instance)
			return false
		}
	}
	emit := func(a Alert) { emitThen(a, nil) }
	// Gaps queued in this leadership and not yet marked alerted, by stream
	// and gap key: not queued twice while their mark is on its way.
	gapsQueued := map[string]bool{}
	var prev map[string][]string // policy/instance -> reasons, nil before the baseline
	failed := map[string]int64{} // job id -> finish time, within the slack
	since := math.MinInt64 + int64(failedSlack)
	t := time.NewTicker(s.cfg.StatusInterval)
	defer t.Stop()
	for {
		r := s.fsm.Store().Read()
		now := s.clock().Now()
		cur := map[string][]string{}
		for _, ps := range s.evaluate(r, now, "") {
			for _, in := range ps.GetInstances() {
				cur[ps.GetPolicy()+"/"+in.GetInstance()] = in.GetReasons()
			}
		}
		baseline := prev == nil
		// New failures: the jobs that finished since the last pass, walked
		// on the finished index from the newest finish time seen, less a
		// slack for finish times stamped out of order (two leaders'
		// clocks); `failed` only remembers the jobs within that slack.
		if baseline {
			// Start at the newest finish: the history before it is not new.
			if p, ok := r.NthNewestFinished(1); ok {
				since = p.At
			}
		}
		newest := since
		r.EachFinishedSince(since-int64(failedSlack), func(j *v1.Job) bool {
			newest = max(newest, j.GetUpdatedAt().AsTime().UnixNano())
			if _, seen := failed[j.GetId()]; seen || j.GetState() != v1.JobState_JOB_STATE_FAILED {
				return true
			}
			failed[j.GetId()] = j.GetUpdatedAt().AsTime().UnixNano()
			if !baseline {
				why := j.GetResult().GetError()
				if why == "" {
					why = j.GetReason()
				}
				emit(Alert{Kind: AlertJobFailed, Policy: j.GetPolicy(), Instance: j.GetInstance(), Job: j.GetId(), At: now,
					Message: fmt.Sprintf("%s job %s on %s failed: %s", catalog.KindName(j.GetKind()), j.GetId(), j.GetInstance(), why)})
			}
			return true
		})
		since = newest
		maps.DeleteFunc(failed, func(_ string, at int64) bool { return at < since-int64(failedSlack) })
		if !baseline {
			for key, reasons := range cur {
				pol, inst, _ := strings.Cut(key, "/")
				before := prev[key]
				if len(reasons) > 0 && len(before) == 0 {
					emit(Alert{Kind: AlertPolicyUnmet, Policy: pol, Instance: inst, At: now,
						Message: fmt.Sprintf("instance %s no longer meets policy %s: %s", inst, pol, strings.Join(reasons, "; "))})
				}
				for _, k := range []struct{ prefix, kind string }{{scheduler.ReasonRPO, AlertRPOBreach}, {scheduler.ReasonStreamFailing, AlertStreamFailing}} {
					if i := slices.IndexFunc(reasons, func(r string) bool { return strings.HasPrefix(r, k.prefix) }); i >= 0 &&
						!slices.ContainsFunc(before, func(r string) bool { return strings.HasPrefix(r, k.prefix) }) {
						emit(Alert{Kind: k.kind, Policy: pol, Instance: inst, At: now, Message: fmt.Sprintf("instance %s (policy %s): %s", inst, pol, reasons[i])})
					}
				}
			}
		}
		for _, rec := range r.BinlogStreams() {
			for _, g := range rec.GetGaps() {
				key := rec.GetInstance() + "\x00" + fsm.GapKey(g)
				if g.GetAlertedAt() != nil || gapsQueued[key] {
					continue
				}
				stream, g := rec.GetInstance(), g
				if emitThen(gapAlert(stream, g, now), func() { s.markGapAlerted(ctx, stream, g) }) {
					gapsQueued[key] = true
				}
			}
		}
		prev = cur
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// markGapAlerted commits that gap g of stream has been alerted. A failure
// (leadership lost) leaves it unmarked: the next leader sends it again.
func (s *Server) markGapAlerted(ctx context.Context, stream string, g *v1.BinlogGap) {
	_, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_MarkBinlogGapsAlerted{MarkBinlogGapsAlerted: &v1.MarkBinlogGapsAlerted{
		Instance: stream, Gaps: []*v1.BinlogGap{{After: g.GetAfter(), Before: g.GetBefore()}}, AlertedAt: now(),
	}}})
	if err != nil {
		s.log.Warn("webhook: could not record a binlog gap as alerted; a later leader may send it again", "stream", stream, "after", g.GetAfter(), "err", err)
	}
}
