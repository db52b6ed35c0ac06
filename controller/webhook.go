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

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Alerts. While a node leads, alertLoop evaluates the policies every
// Config.StatusInterval and compares with the previous evaluation: an
// instance newly failing a policy, an RPO newly above its target, a binlog
// stream newly failing, and a job newly failed each become one Alert,
// POSTed as JSON to every --webhook URL, retried with backoff. The first
// evaluation of a leadership is the baseline and sends nothing, so a
// leader change neither repeats the alerts of the old leader nor sends
// those of a state that did not change; a change during the election
// itself may go unreported (at most once, not exactly once).

// Alert is the JSON body of a webhook call.
type Alert struct {
	// "job_failed", "rpo_breach", "binlog_gap" or "policy_unmet".
	Kind     string    `json:"kind"`
	Policy   string    `json:"policy,omitempty"`
	Instance string    `json:"instance,omitempty"`
	Job      string    `json:"job,omitempty"`
	Message  string    `json:"message"`
	At       time.Time `json:"at"`
	// The controller node that sent it.
	Node string `json:"node"`
}

// Alert kinds.
const (
	AlertJobFailed   = "job_failed"
	AlertRPOBreach   = "rpo_breach"
	AlertBinlogGap   = "binlog_gap"
	AlertPolicyUnmet = "policy_unmet"
)

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
	queue := make(chan Alert, webhookQueue)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case a := <-queue:
				s.hooks.send(ctx, a)
			}
		}
	}()
	defer func() { <-done }()
	emit := func(a Alert) {
		a.Node = s.id.NodeID
		select {
		case queue <- a:
		default:
			s.log.Warn("webhook: queue full; alert dropped", "kind", a.Kind, "policy", a.Policy, "instance", a.Instance)
		}
	}
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
				for _, k := range []struct{ prefix, kind string }{{scheduler.ReasonRPO, AlertRPOBreach}, {scheduler.ReasonBinlogGap, AlertBinlogGap}} {
					if i := slices.IndexFunc(reasons, func(r string) bool { return strings.HasPrefix(r, k.prefix) }); i >= 0 &&
						!slices.ContainsFunc(before, func(r string) bool { return strings.HasPrefix(r, k.prefix) }) {
						emit(Alert{Kind: k.kind, Policy: pol, Instance: inst, At: now, Message: fmt.Sprintf("instance %s (policy %s): %s", inst, pol, reasons[i])})
					}
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
