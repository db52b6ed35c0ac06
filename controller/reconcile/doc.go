// Package reconcile decides, as a pure function of the catalog's records,
// which manifests in a repository were left by backup attempts the catalog
// refused or superseded (an agent that died after storing its manifest but
// before its result was recorded: `<job>-a1` stays while `<job>-a2` is the
// catalog's backup), and which must never be touched: the catalog's own
// backups, a running attempt's manifest, and manifests the catalog knows
// nothing about (another cluster's, a standalone backup).
//
// A manifest is removable only when all of these hold: its id is
// `<job id>-a<n>` of a backup job in the catalog; attempt n is over (an
// earlier attempt of the job, or the last one of a job that failed or was
// cancelled) and is not the job's recorded backup; the manifest's fence is
// the lease the catalog recorded for attempt n (so another cluster's job of
// the same id, or a rewrite under a newer lease, is left alone); and the
// attempt ended at least the grace period ago. Deleting goes through
// archive.Repo.DiscardManifest with that fence, which reads the manifest
// again and deletes it only under that fence.
package reconcile
