package prototest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tidemarkv1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// t0 is a fixed time: the fixtures must not depend on the clock.
var t0 = time.Date(2026, 3, 14, 2, 0, 0, 123456789, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

func chunkID(b byte) []byte {
	id := make([]byte, 32)
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func server() *tidemarkv1.ServerInfo {
	return &tidemarkv1.ServerInfo{
		Flavor:     "mariadb",
		Version:    "10.11.6-MariaDB-0+deb12u1",
		Hostname:   "db-eu-1",
		ServerId:   101,
		ServerUuid: "3e11fa47-71ca-11e1-9e33-c80aa9429562",
	}
}

func consistency() *tidemarkv1.ConsistencyPoint {
	return &tidemarkv1.ConsistencyPoint{
		BinlogFile:     "mysql-bin.000042",
		BinlogPosition: 1234567,
		GtidSet:        "0-101-9876",
		Time:           ts(time.Second),
	}
}

func lease() *tidemarkv1.LeaseToken {
	return &tidemarkv1.LeaseToken{Term: 3, Index: 4711, JobId: "job-1"}
}

func capabilities() *tidemarkv1.Capabilities {
	return &tidemarkv1.Capabilities{
		Flavor:            "mariadb",
		Version:           "10.11.6",
		Edition:           "community",
		Plugins:           []string{"InnoDB", "Aria"},
		BinlogEnabled:     true,
		BinlogFormat:      "ROW",
		GtidMode:          "ON",
		Datadir:           "/var/lib/mysql",
		Filesystem:        tidemarkv1.Filesystem_FILESYSTEM_BTRFS,
		SnapshotFreeBytes: 40 << 30,
		DataBytes:         12 << 30,
		IsReplica:         true,
		StorageReachable:  false,
		StorageError:      "dial tcp 10.0.0.9:9000: i/o timeout",
		AgentVersion:      "v0.1.0",
		ProbedAt:          ts(0),
	}
}

func instance() *tidemarkv1.Instance {
	return &tidemarkv1.Instance{
		Name:         "db-eu-1/main",
		Agent:        "db-eu-1",
		Labels:       map[string]string{"env": "prod", "region": "eu"},
		Capabilities: capabilities(),
		Server:       server(),
		UpdatedAt:    ts(0),
	}
}

// fullManifest sets every field of Manifest and of the messages under it;
// TestManifestFullyPopulated keeps it that way when fields are added.
func fullManifest() *tidemarkv1.Manifest {
	return &tidemarkv1.Manifest{
		FormatVersion: 1,
		BackupId:      "bk-20260314-020000-db-eu-1",
		Instance:      "db-eu-1/main",
		Engine:        "logical",
		Server:        server(),
		Consistency:   consistency(),
		StartedAt:     ts(0),
		FinishedAt:    ts(90 * time.Second),
		LockDuration:  durationpb.New(120 * time.Millisecond),
		Streams: []*tidemarkv1.StreamRef{
			{
				Name: "schema.sql",
				Size: 1000,
				Chunks: []*tidemarkv1.ChunkRef{
					{Id: chunkID(1), Size: 1000, StoredSize: 400},
				},
				Sha256:   chunkID(9),
				Metadata: map[string]string{"kind": "schema"},
			},
			{
				Name: "data/shop.orders/0001",
				Size: 8<<20 + 5,
				Chunks: []*tidemarkv1.ChunkRef{
					{Id: chunkID(2), Size: 8 << 20, StoredSize: 3 << 20},
					{Id: chunkID(3), Size: 5, StoredSize: 18},
				},
				Sha256:   chunkID(10),
				Metadata: map[string]string{"table": "shop.orders", "pk_from": "1", "pk_to": "500000"},
			},
		},
		LogicalBytes:   8<<20 + 1005,
		StoredBytes:    3<<20 + 418,
		NewStoredBytes: 3 << 20,
		Chunking: &tidemarkv1.ChunkParams{
			ChunkSize:        8 << 20,
			Hash:             "hmac-sha256",
			Compression:      "zstd",
			CompressionLevel: 3,
			Encryption:       "aes-256-gcm",
		},
		ToolVersion:    "v0.1.0",
		Labels:         map[string]string{"policy": "nightly"},
		Fence:          lease(),
		EngineMetadata: map[string]string{"lower_case_table_names": "0"},
		ParentBackupId: "bk-20260313-020000-db-eu-1",
	}
}

func job() *tidemarkv1.Job {
	return &tidemarkv1.Job{
		Id:            "job-1",
		Kind:          tidemarkv1.JobKind_JOB_KIND_BACKUP,
		Instance:      "db-eu-1/main",
		State:         tidemarkv1.JobState_JOB_STATE_PENDING,
		Attempt:       1,
		Lease:         lease(),
		LeaseDeadline: ts(30 * time.Second),
		Agent:         "db-eu-1",
		CreatedAt:     ts(0),
		UpdatedAt:     ts(time.Second),
		Progress:      &tidemarkv1.JobProgress{BytesDone: 10, BytesTotal: 100, RowsDone: 7, Phase: "dumping", UpdatedAt: ts(time.Second)},
		Result:        &tidemarkv1.JobResult{BackupId: "bk-1", Error: "", ManifestKey: "manifests/bk-1"},
		Policy:        "nightly",
		MaxAttempts:   3,
		Params: &tidemarkv1.Job_Backup{Backup: &tidemarkv1.BackupParams{
			Engine:        "logical",
			RepositoryUri: "s3://backups/prod?endpoint=minio:9000",
			Labels:        map[string]string{"policy": "nightly"},
			Policy:        "nightly",
			BackupId:      "bk-1",
			Parallelism:   4,
		}},
	}
}

// binlogGap is a gap as an agent reports it and the catalog stores it.
func binlogGap() *tidemarkv1.BinlogGap {
	return &tidemarkv1.BinlogGap{
		After: "GTID 0-1-90 (bin.000001:900)", Before: "GTID 0-1-95 (bin.000003:4)", AfterGtid: "0-1-90", BeforeGtid: "0-1-95",
		FromTime: ts(10 * time.Second), ToTime: ts(20 * time.Second), Reason: "purged before it was archived",
		DetectedAt: ts(30 * time.Second), RecordedAt: ts(31 * time.Second), AlertedAt: ts(32 * time.Second),
	}
}

// commandArms holds one Command per arm of Command.cmd, keyed by the arm's
// field name. TestCommandArmsCovered fails when an arm is missing here.
func commandArms() map[string]*tidemarkv1.Command {
	restore := job()
	restore.Kind = tidemarkv1.JobKind_JOB_KIND_RESTORE
	restore.Params = &tidemarkv1.Job_Restore{Restore: &tidemarkv1.RestoreParams{
		BackupId:       "bk-1",
		TargetInstance: "db-eu-2/scratch",
		TargetDatadir:  "/srv/restore",
		StopAt:         &tidemarkv1.RestoreParams_StopAtPosition{StopAtPosition: &tidemarkv1.BinlogPosition{File: "mysql-bin.000043", Position: 4}},
		RepositoryUri:  "file:///var/lib/tidemark/repo",
		Parallelism:    8,
	}}
	return map[string]*tidemarkv1.Command{
		"register_agent": {Cmd: &tidemarkv1.Command_RegisterAgent{RegisterAgent: &tidemarkv1.RegisterAgent{
			Agent: &tidemarkv1.Agent{
				Id:             "agent-7",
				Name:           "db-eu-1",
				Labels:         map[string]string{"env": "prod"},
				Capabilities:   capabilities(),
				LastSeen:       ts(0),
				Address:        "10.0.0.5:51234",
				ControllerNode: "ctl-1",
				RegisteredAt:   ts(0),
			},
			Instances:    []*tidemarkv1.Instance{instance()},
			RegisteredAt: ts(0),
		}}},
		"upsert_instance": {Cmd: &tidemarkv1.Command_UpsertInstance{UpsertInstance: &tidemarkv1.UpsertInstance{
			Instance:  instance(),
			UpdatedAt: ts(0),
		}}},
		"submit_job": {Cmd: &tidemarkv1.Command_SubmitJob{SubmitJob: &tidemarkv1.SubmitJob{Job: restore}}},
		"assign_job": {Cmd: &tidemarkv1.Command_AssignJob{AssignJob: &tidemarkv1.AssignJob{
			JobId:         "job-1",
			Agent:         "db-eu-1",
			Lease:         lease(),
			LeaseDeadline: ts(30 * time.Second),
			AssignedAt:    ts(0),
		}}},
		"update_job_state": {Cmd: &tidemarkv1.Command_UpdateJobState{UpdateJobState: &tidemarkv1.UpdateJobState{
			JobId:     "job-1",
			State:     tidemarkv1.JobState_JOB_STATE_SUCCEEDED,
			Lease:     lease(),
			Progress:  &tidemarkv1.JobProgress{BytesDone: 100, BytesTotal: 100, Phase: "done", UpdatedAt: ts(time.Minute)},
			Result:    &tidemarkv1.JobResult{BackupId: "bk-1", ManifestKey: "manifests/bk-1"},
			UpdatedAt: ts(time.Minute),
			Reason:    "agent reported success",
		}}},
		"expire_lease": {Cmd: &tidemarkv1.Command_ExpireLease{ExpireLease: &tidemarkv1.ExpireLease{
			JobId:     "job-1",
			Lease:     lease(),
			ExpiredAt: ts(31 * time.Second),
			Retry:     true,
		}}},
		"upsert_member": {Cmd: &tidemarkv1.Command_UpsertMember{UpsertMember: &tidemarkv1.UpsertMember{
			Member: &tidemarkv1.MemberRecord{Id: "c2", Address: "10.0.0.2:7400", RaftAddress: "10.0.0.2:7401", UpdatedAt: ts(5 * time.Second)},
		}}},
		"remove_member": {Cmd: &tidemarkv1.Command_RemoveMember{RemoveMember: &tidemarkv1.RemoveMember{Id: "c3"}}},
		"create_join_token": {Cmd: &tidemarkv1.Command_CreateJoinToken{CreateJoinToken: &tidemarkv1.CreateJoinToken{Token: &tidemarkv1.JoinToken{
			Id: "tok1", SecretHash: []byte{1, 2, 3}, Role: "agent", CreatedAt: ts(0), ExpiresAt: ts(time.Hour), UsesLeft: 2, CreatedBy: "user admin (admin)",
		}}}},
		"consume_join_token": {Cmd: &tidemarkv1.Command_ConsumeJoinToken{ConsumeJoinToken: &tidemarkv1.ConsumeJoinToken{
			Id: "tok1", SecretHash: []byte{1, 2, 3}, Role: "agent", Now: ts(time.Minute), Name: "db-eu-1",
		}}},
		"revoke_agent": {Cmd: &tidemarkv1.Command_RevokeAgent{RevokeAgent: &tidemarkv1.RevokeAgent{Revocation: &tidemarkv1.Revocation{
			Name: "db-eu-1", RevokedAt: ts(0), RevokedBy: "user admin (admin)",
		}}}},
		"set_cluster_ca": {Cmd: &tidemarkv1.Command_SetClusterCa{SetClusterCa: &tidemarkv1.SetClusterCA{Ca: &tidemarkv1.ClusterCA{
			CertPem: []byte("-----BEGIN CERTIFICATE-----"), SealedKey: []byte{9, 8, 7},
		}}}},
		"create_access_token": {Cmd: &tidemarkv1.Command_CreateAccessToken{CreateAccessToken: &tidemarkv1.CreateAccessToken{Token: &tidemarkv1.AccessToken{
			Id: "tok2", SecretHash: []byte{4, 5}, User: "alice", Role: "operator", CreatedAt: ts(0), ExpiresAt: ts(8 * time.Hour), CreatedBy: "user admin (admin)",
		}}}},
		"pin_backup": {Cmd: &tidemarkv1.Command_PinBackup{PinBackup: &tidemarkv1.PinBackup{
			BackupId: "bk-1", Pin: &tidemarkv1.BackupPin{Reason: "legal hold", By: "user alice (operator)", At: ts(0)},
		}}},
		"unpin_backup": {Cmd: &tidemarkv1.Command_UnpinBackup{UnpinBackup: &tidemarkv1.UnpinBackup{BackupId: "bk-1"}}},
		"apply_policies": {Cmd: &tidemarkv1.Command_ApplyPolicies{ApplyPolicies: &tidemarkv1.ApplyPolicies{
			Specs: []*tidemarkv1.PolicySpec{{Name: "prod-db", Selector: "env=prod,dc in (a,b)",
				Backups:   []*tidemarkv1.PolicySchedule{{Cron: "@every 30s", Engine: "auto", Prefer: "replica"}},
				Retention: &tidemarkv1.RetentionRules{KeepLast: 3, KeepDaily: 7}}},
			Sources: []string{"name: prod-db\n"}, AppliedBy: "user alice (admin)", AppliedAt: ts(0),
		}}},
		"record_engine_decision": {Cmd: &tidemarkv1.Command_RecordEngineDecision{RecordEngineDecision: &tidemarkv1.RecordEngineDecision{
			Instance: "db-eu-1/main",
			Decision: &tidemarkv1.EngineDecision{Chosen: "snapshot", DecidedAt: ts(0), ProbedAt: ts(-time.Minute),
				Verdicts: []*tidemarkv1.EngineVerdict{{Engine: "snapshot", Ok: true, Reason: "datadir on a btrfs subvolume"}, {Engine: "logical", Ok: true, Reason: "always"}}},
			Change: &tidemarkv1.EngineChange{OldEngine: "mariabackup", NewEngine: "snapshot", OldReason: "plain dir", NewReason: "btrfs", At: ts(0)},
		}}},
		"finish_reconcile": {Cmd: &tidemarkv1.Command_FinishReconcile{FinishReconcile: &tidemarkv1.FinishReconcile{
			JobId: "reconcile-1", SweptJobIds: []string{"job-7", "job-9"}, SweptAt: ts(0),
		}}},
		"attempt_stopped": {Cmd: &tidemarkv1.Command_AttemptStopped{AttemptStopped: &tidemarkv1.AttemptStopped{
			JobId: "job-7", Lease: &tidemarkv1.LeaseToken{JobId: "job-7", Term: 3, Index: 41}, Reason: "heartbeat", StoppedAt: ts(0),
		}}},
		"prune_catalog": {Cmd: &tidemarkv1.Command_PruneCatalog{PruneCatalog: &tidemarkv1.PruneCatalog{
			At: ts(0), MaxJobs: 100000, JobAgeSeconds: 90 * 86400, TombstoneAgeSeconds: 30 * 86400, Batch: 1000,
			ResumeAfterNanos: 1_764_547_200_000_000_000, ResumeAfterId: "job-7",
		}}},
		"idempotent": {Cmd: &tidemarkv1.Command_Idempotent{Idempotent: &tidemarkv1.Idempotent{
			Key: "7f3c9a51e2b44d0c8a6e1f2d3c4b5a69", Fingerprint: []byte{0x12, 0x34, 0x56}, Method: "/tidemark.v1.ControlService/SubmitBackup",
			RecordedAt: ts(0), Cmd: &tidemarkv1.Command{Cmd: &tidemarkv1.Command_SubmitJob{SubmitJob: &tidemarkv1.SubmitJob{Job: restore}}},
		}}},
		"delete_policy": {Cmd: &tidemarkv1.Command_DeletePolicy{DeletePolicy: &tidemarkv1.DeletePolicy{Name: "prod-db", DeletedAt: ts(time.Hour)}}},
		"record_schedule_skips": {Cmd: &tidemarkv1.Command_RecordScheduleSkips{RecordScheduleSkips: &tidemarkv1.RecordScheduleSkips{
			Skips: []*tidemarkv1.ScheduleSkip{{Id: "skip-1", Policy: "prod-db", RunKey: "db-eu-1/main", First: ts(0), Last: ts(time.Minute), Count: 2, Reason: "no leader"}},
		}}},
		"mark_backups_expired": {Cmd: &tidemarkv1.Command_MarkBackupsExpired{MarkBackupsExpired: &tidemarkv1.MarkBackupsExpired{
			BackupIds: []string{"bk-0"}, Reasons: []string{"expire: outside every rule"}, ExpiredAt: ts(0),
			Job: &tidemarkv1.Job{Id: "expire-1", Kind: tidemarkv1.JobKind_JOB_KIND_EXPIRE, Instance: "db-eu-1/main", State: tidemarkv1.JobState_JOB_STATE_PENDING,
				Params: &tidemarkv1.Job_Expire{Expire: &tidemarkv1.ExpireParams{RepositoryUri: "file:///var/lib/tidemark/repo",
					Backups:        []*tidemarkv1.ExpireTarget{{BackupId: "bk-0", Fence: &tidemarkv1.LeaseToken{Term: 2, Index: 17, JobId: "job-0"}}},
					BinlogInstance: "db-eu-1/main", BinlogBefore: ts(0)}}},
		}}},
		"finish_expiry": {Cmd: &tidemarkv1.Command_FinishExpiry{FinishExpiry: &tidemarkv1.FinishExpiry{JobId: "expire-1", DeletedBackupIds: []string{"bk-0"}, DeletedAt: ts(time.Minute)}}},
		"record_backup_copy": {Cmd: &tidemarkv1.Command_RecordBackupCopy{RecordBackupCopy: &tidemarkv1.RecordBackupCopy{BackupId: "bk-1",
			Copy: &tidemarkv1.BackupCopy{RepositoryUri: "s3://dr-bucket/copies", CopiedAt: ts(time.Hour), JobId: "copy-1", UploadedBytes: 1 << 20}}}},
		"record_audit": {Cmd: &tidemarkv1.Command_RecordAudit{RecordAudit: &tidemarkv1.RecordAudit{Record: &tidemarkv1.AuditRecord{
			Id: "20261203T150000Z-00000001", At: ts(0), Who: "user alice (operator)", Rpc: "/tidemark.v1.ControlService/SubmitRestore",
			Target: "db-eu-1/main", Flags: map[string]string{"backup_id": "bk-1", "drop_existing": "false"}, Outcome: "ok",
		}}}},
		"record_watermarks": {Cmd: &tidemarkv1.Command_RecordWatermarks{RecordWatermarks: &tidemarkv1.RecordWatermarks{
			Streams: []*tidemarkv1.BinlogStream{{
				Instance: "db-eu-1/main", JobId: "job-2", Lease: lease(), Cluster: "eu-1", Failures: 2,
				LastError: "connection refused", LastErrorAt: ts(40 * time.Second),
				Watermark: &tidemarkv1.StreamWatermark{Instance: "db-eu-1/main", Gtid: "0-1-100", File: "bin.000003", Position: 4711,
					LastEventTime: ts(41 * time.Second), DurableAt: ts(42 * time.Second)},
				Gaps: []*tidemarkv1.BinlogGap{binlogGap()},
			}},
			RecordedAt: ts(43 * time.Second),
		}}},
		"mark_binlog_gaps_alerted": {Cmd: &tidemarkv1.Command_MarkBinlogGapsAlerted{MarkBinlogGapsAlerted: &tidemarkv1.MarkBinlogGapsAlerted{
			Instance: "db-eu-1/main", Gaps: []*tidemarkv1.BinlogGap{binlogGap()}, AlertedAt: ts(44 * time.Second),
		}}},
		"record_backup": {Cmd: &tidemarkv1.Command_RecordBackup{RecordBackup: &tidemarkv1.RecordBackup{
			Backup: &tidemarkv1.Backup{
				Id:             "bk-1",
				Instance:       "db-eu-1/main",
				Engine:         "logical",
				Status:         tidemarkv1.BackupStatus_BACKUP_STATUS_COMPLETE,
				ManifestKey:    "manifests/bk-1",
				RepositoryUri:  "s3://backups/prod?endpoint=minio:9000",
				StartedAt:      ts(0),
				FinishedAt:     ts(90 * time.Second),
				SizeBytes:      8 << 20,
				StoredBytes:    3 << 20,
				Consistency:    consistency(),
				JobId:          "job-1",
				Fence:          lease(),
				ParentBackupId: "bk-0",
				Labels:         map[string]string{"policy": "nightly"},
			},
			RecordedAt: ts(91 * time.Second),
		}}},
	}
}

// roundTrip checks that m survives the binary and the JSON encodings.
func roundTrip(t *testing.T, m proto.Message) {
	t.Helper()

	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	got := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatalf("proto.Unmarshal: %v", err)
	}
	if !proto.Equal(m, got) {
		t.Fatalf("binary round trip changed the message:\n want %v\n  got %v", m, got)
	}

	j, err := protojson.Marshal(m)
	if err != nil {
		t.Fatalf("protojson.Marshal: %v", err)
	}
	got = m.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal(j, got); err != nil {
		t.Fatalf("protojson.Unmarshal: %v\n%s", err, j)
	}
	if !proto.Equal(m, got) {
		t.Fatalf("JSON round trip changed the message:\n want %v\n  got %v\n json %s", m, got, j)
	}
}

func TestManifestRoundTrip(t *testing.T) {
	roundTrip(t, fullManifest())
}

// The manifest's bytes must not depend on map iteration order when written
// with Deterministic (the archive may hash or compare them).
func TestManifestDeterministicMarshal(t *testing.T) {
	opts := proto.MarshalOptions{Deterministic: true}
	first, err := opts.Marshal(fullManifest())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := opts.Marshal(fullManifest())
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(first) {
			t.Fatal("deterministic marshal of the same manifest gave different bytes")
		}
	}
}

// TestManifestFullyPopulated fails when a field is added to Manifest (or a
// message under it) without being set in fullManifest.
func TestManifestFullyPopulated(t *testing.T) {
	for _, path := range unsetFields(fullManifest().ProtoReflect(), "Manifest") {
		t.Errorf("fullManifest leaves %s unset", path)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for name, cmd := range commandArms() {
		t.Run(name, func(t *testing.T) { roundTrip(t, cmd) })
	}
}

// TestCommandArmsCovered fails when Command gains an arm that commandArms
// does not exercise, or when an entry sets a different arm than its key.
func TestCommandArmsCovered(t *testing.T) {
	arms := commandArms()
	oneof := (&tidemarkv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("cmd")
	if oneof == nil {
		t.Fatal("Command has no oneof named cmd")
	}
	fields := oneof.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		name := string(fd.Name())
		cmd, ok := arms[name]
		if !ok {
			t.Errorf("Command arm %s (field %d) has no entry in commandArms", name, fd.Number())
			continue
		}
		set := cmd.ProtoReflect().WhichOneof(oneof)
		if set == nil || set.Name() != fd.Name() {
			t.Errorf("commandArms[%q] sets arm %v", name, set)
		}
		delete(arms, name)
	}
	for name := range arms {
		t.Errorf("commandArms has %q, which is not an arm of Command.cmd", name)
	}
}

// TestEveryMessageRoundTrip fills every message of package tidemark.v1 with
// every field set (once per oneof arm) and round-trips it, so a new message
// or field is covered without touching this test.
func TestEveryMessageRoundTrip(t *testing.T) {
	var mds []protoreflect.MessageDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("tidemark.v1", func(fd protoreflect.FileDescriptor) bool {
		mds = appendMessages(mds, fd.Messages())
		return true
	})
	if len(mds) < 10 {
		t.Fatalf("found only %d messages in package tidemark.v1; is the generated package linked?", len(mds))
	}
	for _, md := range mds {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
		if err != nil {
			t.Fatalf("%s: %v", md.FullName(), err)
		}
		for variant := range maxOneofArms(md, 0) {
			t.Run(fmt.Sprintf("%s/%d", md.Name(), variant), func(t *testing.T) {
				m := mt.New()
				fill(m, variant, 0)
				roundTrip(t, m.Interface())
			})
		}
	}
}

func appendMessages(dst []protoreflect.MessageDescriptor, mds protoreflect.MessageDescriptors) []protoreflect.MessageDescriptor {
	for i := range mds.Len() {
		md := mds.Get(i)
		if md.IsMapEntry() {
			continue
		}
		dst = append(dst, md)
		dst = appendMessages(dst, md.Messages())
	}
	return dst
}

// maxOneofArms is the largest number of arms of any oneof in md or in the
// messages under it (at least 1): filling with variants 0..n-1 sets every arm.
func maxOneofArms(md protoreflect.MessageDescriptor, depth int) int {
	n := 1
	if depth > 8 {
		return n
	}
	for i := range md.Oneofs().Len() {
		if od := md.Oneofs().Get(i); !od.IsSynthetic() {
			n = max(n, od.Fields().Len())
		}
	}
	for i := range md.Fields().Len() {
		if sub := md.Fields().Get(i).Message(); sub != nil {
			n = max(n, maxOneofArms(sub, depth+1))
		}
	}
	return n
}

// fill sets every field of m to a non-zero value, recursively. Of each oneof
// it sets arm variant%len(arms).
func fill(m protoreflect.Message, variant, depth int) {
	md := m.Descriptor()
	switch md.FullName() {
	case "google.protobuf.Timestamp":
		m.Set(md.Fields().ByName("seconds"), protoreflect.ValueOfInt64(t0.Unix()))
		m.Set(md.Fields().ByName("nanos"), protoreflect.ValueOfInt32(int32(t0.Nanosecond())))
		return
	case "google.protobuf.Duration":
		m.Set(md.Fields().ByName("seconds"), protoreflect.ValueOfInt64(90))
		m.Set(md.Fields().ByName("nanos"), protoreflect.ValueOfInt32(5))
		return
	case "google.protobuf.Any":
		// A resolvable type (JSON needs one): a job, as an idempotency
		// record holds.
		job := &tidemarkv1.Job{Id: "job-1", Kind: tidemarkv1.JobKind_JOB_KIND_BACKUP, Instance: "db-eu-1/main", CreatedAt: timestamppb.New(t0)}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(job)
		if err != nil {
			panic(err)
		}
		m.Set(md.Fields().ByName("type_url"), protoreflect.ValueOfString("type.googleapis.com/tidemark.v1.Job"))
		m.Set(md.Fields().ByName("value"), protoreflect.ValueOfBytes(b))
		return
	}
	if depth > 8 {
		return
	}
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if od.Fields().Get(variant%od.Fields().Len()) != fd {
				continue
			}
		}
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Message() != nil {
					e := l.NewElement()
					fill(e.Message(), variant, depth+1)
					l.Append(e)
				} else {
					l.Append(scalar(fd))
				}
			}
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			v := mp.NewValue()
			if fd.MapValue().Message() != nil {
				fill(v.Message(), variant, depth+1)
			} else {
				v = scalar(fd.MapValue())
			}
			mp.Set(scalar(fd.MapKey()).MapKey(), v)
		case fd.Message() != nil:
			fill(m.Mutable(fd).Message(), variant, depth+1)
		default:
			m.Set(fd, scalar(fd))
		}
	}
}

// scalar is a non-zero value for a non-message field.
func scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(vals.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(-7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(-1 << 40)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1 << 63)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(2.5)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("v-" + string(fd.Name()) + "-ü")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{0, 1, 2, 0xff})
	}
	panic(fmt.Sprintf("scalar: unhandled kind %v of %s", fd.Kind(), fd.FullName()))
}

// unsetFields lists the fields of m, recursively, that hold their zero value
// (empty lists and maps included); of a oneof, one arm must be set.
func unsetFields(m protoreflect.Message, path string) []string {
	var unset []string
	md := m.Descriptor()
	for i := range md.Oneofs().Len() {
		od := md.Oneofs().Get(i)
		if !od.IsSynthetic() && m.WhichOneof(od) == nil {
			unset = append(unset, path+"."+string(od.Name()))
		}
	}
	for i := range md.Fields().Len() {
		fd := md.Fields().Get(i)
		p := path + "." + string(fd.Name())
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if m.WhichOneof(od) != fd {
				continue
			}
		}
		if !m.Has(fd) {
			unset = append(unset, p)
			continue
		}
		switch {
		case fd.IsList():
			l := m.Get(fd).List()
			if fd.Message() != nil {
				for j := range l.Len() {
					unset = append(unset, unsetFields(l.Get(j).Message(), fmt.Sprintf("%s[%d]", p, j))...)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
					unset = append(unset, unsetFields(v.Message(), fmt.Sprintf("%s[%v]", p, k))...)
					return true
				})
			}
		case fd.Message() != nil && !strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf."):
			unset = append(unset, unsetFields(m.Get(fd).Message(), p)...)
		}
	}
	return unset
}
