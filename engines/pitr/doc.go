// Package pitr restores an instance to a point in time: the newest complete
// base backup at or before the target, then its archived binlog rolled
// forward from exactly the base's consistency point. Every refusal (no
// base, an archive that starts late, a gap, a target past the archive)
// comes before anything is written to the target.
package pitr
