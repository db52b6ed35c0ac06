package logical

import (
	"context"
	"database/sql"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// startMariaDB starts a test server with its own tmpdir: servers that share
// /tmp have seen their internal temporary tables vanish (Error 6 on
// information_schema queries) while other tests ran.
func startMariaDB(t *testing.T, name string, extra ...string) *testenv.MariaDB {
	t.Helper()
	return testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: name, ExtraArgs: append([]string{"--tmpdir=" + t.TempDir()}, extra...)})
}

// smallPieces makes even test tables split into several pieces.
var smallPieces = &Engine{PieceRows: 700, PieceBytes: 1 << 20}

func backupMem(t *testing.T, e *Engine, p engines.BackupParams) (*memArchive, *engines.BackupResult) {
	t.Helper()
	a := newMem()
	p.Sink = a
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	res, err := e.Backup(ctx, p)
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if err := a.allClosed(); err != nil {
		t.Fatal(err)
	}
	return a, res
}

func restoreMem(t *testing.T, e *Engine, a *memArchive, p engines.RestoreParams) *engines.RestoreResult {
	t.Helper()
	p.Source = a
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(2*time.Minute))
	defer cancel()
	res, err := e.Restore(ctx, p)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return res
}

// typesSchema holds every column type and schema object the engine must
// carry over exactly.
var typesSchema = []string{
	"SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO', SESSION time_zone = '+02:00'",
	"CREATE DATABASE rt CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
	"USE rt",
	`CREATE TABLE rt.types (
  id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  c_null VARCHAR(10) NULL, c_empty VARCHAR(10) NULL,
  c_bin VARBINARY(300), c_blob LONGBLOB, c_binfix BINARY(4),
  c_utf8 VARCHAR(64) CHARACTER SET utf8mb4, c_latin1 VARCHAR(64) CHARACTER SET latin1, c_text TEXT,
  c_json JSON, c_dec DECIMAL(40,12), c_double DOUBLE, c_float FLOAT, c_ufloat FLOAT UNSIGNED,
  c_dt DATETIME(6), c_ts TIMESTAMP(6) NULL DEFAULT NULL, c_time TIME(3), c_date DATE, c_year YEAR,
  c_bit BIT(13), c_bit64 BIT(64), c_bit1 BIT(1),
  c_enum ENUM('', 'a', 'b c'), c_set SET('x', 'y', 'z'),
  c_geo GEOMETRY, c_point POINT,
  c_ubig BIGINT UNSIGNED, c_big BIGINT, c_tiny TINYINT, c_dfix DOUBLE(10,3), c_ffix FLOAT(7,2), c_mz MEDIUMINT(5) ZEROFILL,
  c_gen_v INT AS (id * 2) VIRTUAL, c_gen_s VARCHAR(80) AS (CONCAT(c_utf8, '!')) STORED,
  KEY k_utf8 (c_utf8), KEY k_multi (c_dt, c_tiny), FULLTEXT KEY ft_text (c_text)
) ENGINE=InnoDB`,
	`INSERT INTO rt.types (id, c_null, c_empty, c_bin, c_blob, c_binfix, c_utf8, c_latin1, c_text, c_json, c_dec, c_double, c_float, c_ufloat,
  c_dt, c_ts, c_time, c_date, c_year, c_bit, c_bit64, c_bit1, c_enum, c_set, c_geo, c_point, c_ubig, c_big, c_tiny, c_dfix, c_ffix, c_mz) VALUES
 (0, NULL, '', X'00090A0D5C4E275C', X'000102030405FF', X'00', '😀 naïve 李', CONVERT(X'E9FF41' USING latin1), 'tab\there\nnewline\\ and \\N and \0 nul',
  '{"a": [1, 2.5, "x\\ty"], "b": null}', '-1234567890123456789012345678.123456789012', 0.1e0+0.2e0, 1.2345678, 3.4e38,
  '2024-02-29 23:59:59.999999', '2038-01-19 05:14:07.999999', '-838:59:59.000', '1000-01-01', 1901, b'1010101010101', b'1111111111111111111111111111111111111111111111111111111111111111', b'1',
  '', 'x,z', ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 0))'), POINT(-1.5, 2.25), 18446744073709551615, -9223372036854775808, -128, -0.001, 1234.57, 7),
 (NULL, 'x', NULL, '', '', X'FFFFFFFF', '', '', '', '[]', '0.000000000001', 1.7976931348623157e308, -1.17549435e-38, 0,
  '9999-12-31 23:59:59.999999', '1970-01-01 02:00:01.000001', '838:59:59.999', '9999-12-31', 2155, b'0', b'0', b'0',
  'b c', '', ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), POINT(0, 0), 0, 9223372036854775807, 127, 1234567.891, -0.01, 99999),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 5e-324, NULL, NULL, NULL, NULL, NULL, '0000-00-00', 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, -1.5, NULL, NULL),
 (NULL, '\\N', 'N', X'5C', X'5C4E', X'0A0A0A0A', '\\', '\t', '\n', '"\\u0000"', '-0.5', -0e0, -0.0, 1e-10,
  '2001-01-01 00:00:00', '2001-03-25 02:30:00', '00:00:00.001', '2001-01-01', 2001, b'1', b'1', b'1', 'a', 'x,y,z',
  NULL, NULL, 1, -1, 0, 0.1, 0.3, 0)`,
	// MariaDB's fixed binary types, which print as text.
	`CREATE TABLE rt.fbt (id INT PRIMARY KEY, i6 INET6, i4 INET4, uu UUID)`,
	`INSERT INTO rt.fbt VALUES (1, '::1', '10.0.0.1', '123e4567-e89b-12d3-a456-426614174000'), (2, NULL, NULL, NULL),
  (3, '::ffff:1.2.3.4', '0.0.0.0', '00000000-0000-0000-0000-000000000000'), (4, '2001:db8::ff00:42:8329', '255.255.255.255', 'ffffffff-ffff-ffff-ffff-ffffffffffff')`,
	// A table big enough to split, with keys that start negative.
	`CREATE TABLE rt.big (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT, KEY k_v (v)) ENGINE=InnoDB`,
	`INSERT INTO rt.big SELECT CAST(seq AS SIGNED) - 2000, CONCAT('row ', seq, REPEAT('x', seq MOD 17)), IF(seq MOD 7 = 0, NULL, seq) FROM seq_1_to_5000`,
	// Unsigned keys near the top of the range.
	`CREATE TABLE rt.ubig (id BIGINT UNSIGNED NOT NULL, v INT, UNIQUE KEY (id)) ENGINE=InnoDB`,
	`INSERT INTO rt.ubig SELECT 18446744073709551615 - seq * 1000, seq FROM seq_0_to_1999`,
	`CREATE TABLE rt.nopk (a INT, b TEXT) ENGINE=InnoDB`,
	`INSERT INTO rt.nopk SELECT seq MOD 10, REPEAT('dup', seq MOD 3) FROM seq_1_to_2000`,
	`CREATE TABLE rt.composite (a INT NOT NULL, b VARCHAR(10) NOT NULL, c DATE, PRIMARY KEY (a, b)) ENGINE=InnoDB`,
	`INSERT INTO rt.composite SELECT seq, CONCAT('k', seq MOD 5), '2020-01-01' + INTERVAL seq DAY FROM seq_1_to_1500`,
	`CREATE TABLE rt.my (id INT PRIMARY KEY, v VARCHAR(20), KEY (v)) ENGINE=MyISAM DEFAULT CHARSET=latin1`,
	`INSERT INTO rt.my SELECT seq, CONCAT('m', seq) FROM seq_1_to_300`,
	`CREATE TABLE rt.aria (id INT AUTO_INCREMENT, v BLOB, KEY (id)) ENGINE=Aria`,
	`INSERT INTO rt.aria (v) SELECT RANDOM_BYTES(20) FROM seq_1_to_50`,
	`CREATE TABLE rt.parent (id INT PRIMARY KEY, name VARCHAR(20), KEY k_name (name)) ENGINE=InnoDB`,
	`CREATE TABLE rt.child (id INT PRIMARY KEY, parent_id INT, note VARCHAR(10), KEY k_note (note),
  CONSTRAINT fk_parent FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE) ENGINE=InnoDB`,
	`INSERT INTO rt.parent SELECT seq, CONCAT('p', seq) FROM seq_1_to_100`,
	`INSERT INTO rt.child SELECT seq, 1 + seq MOD 100, 'n' FROM seq_1_to_900`,
	`CREATE TABLE rt.empty (id INT PRIMARY KEY, v INT, KEY (v))`,
	`CREATE SEQUENCE rt.seq1 START WITH 100 INCREMENT BY 5`,
	`SELECT NEXTVAL(rt.seq1), NEXTVAL(rt.seq1)`,
	`CREATE VIEW rt.a_view AS SELECT id, c_utf8 FROM rt.z_base_view WHERE id > 0`,
	"CREATE DATABASE rt2 COMMENT 'the second database'",
	`CREATE TABLE rt2.t (id INT PRIMARY KEY, v JSON)`,
	`INSERT INTO rt2.t VALUES (1, '{"k": "v"}')`,
	`CREATE VIEW rt2.cross_view AS SELECT t.id, b.v FROM rt2.t JOIN rt.big b ON b.id = t.id`,
	`CREATE PROCEDURE rt.p_count(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM big; END`,
	`CREATE FUNCTION rt.f_double(x INT) RETURNS INT DETERMINISTIC RETURN x * 2`,
	`CREATE TRIGGER rt.big_bi BEFORE INSERT ON rt.big FOR EACH ROW SET NEW.n = COALESCE(NEW.n, -1)`,
	`CREATE TRIGGER rt.big_bi2 BEFORE INSERT ON rt.big FOR EACH ROW FOLLOWS big_bi SET NEW.v = CONCAT(NEW.v, '')`,
	`CREATE EVENT rt.ev_nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM rt.nopk WHERE a < 0`,
	"ANALYZE TABLE rt.big, rt.ubig, rt.nopk, rt.composite, rt.child",
}

// The view a_view depends on must sort after it, so that restore has to
// order views by dependency.
var typesSchemaLate = `CREATE VIEW rt.z_base_view AS SELECT id, c_utf8 FROM rt.types`

// objectsSchema adds every kind of schema object and option mariadb-dump
// prints: partitions, spatial keys, system versioning, CHECK constraints,
// invisible columns, comments, an AUTO_INCREMENT counter above the data,
// sequences, routines and triggers under their own sql_mode, ordered
// triggers, events of every status and schedule, views of every algorithm,
// security and check option, and objects of another definer.
var objectsSchema = []string{
	"CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app'",
	"GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE ON rt.* TO 'app'@'%'",
	`CREATE TABLE rt.parts (id INT NOT NULL, d DATE NOT NULL, v VARCHAR(20), PRIMARY KEY (id, d), KEY k_v (v))
  PARTITION BY RANGE (YEAR(d)) (PARTITION p2019 VALUES LESS THAN (2020) COMMENT 'old', PARTITION pmax VALUES LESS THAN MAXVALUE)`,
	`INSERT INTO rt.parts SELECT seq, '2019-06-01' + INTERVAL seq DAY, CONCAT('v', seq) FROM seq_1_to_800`,
	`CREATE TABLE rt.hashed (id INT PRIMARY KEY, v INT) PARTITION BY HASH (id) PARTITIONS 3`,
	`INSERT INTO rt.hashed SELECT seq, seq FROM seq_1_to_100`,
	`CREATE TABLE rt.subparts (id INT NOT NULL, y INT NOT NULL, PRIMARY KEY (id, y)) PARTITION BY RANGE (y) SUBPARTITION BY KEY (id) SUBPARTITIONS 2
  (PARTITION a VALUES LESS THAN (10), PARTITION b VALUES LESS THAN MAXVALUE)`,
	`INSERT INTO rt.subparts SELECT seq, seq MOD 20 FROM seq_1_to_100`,
	`CREATE TABLE rt.places (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) COMMENT 'the place''s name', pos POINT NOT NULL, area POLYGON,
  SPATIAL KEY sp_pos (pos), KEY k_name (name)) ENGINE=Aria COMMENT='places; with a spatial key'`,
	`INSERT INTO rt.places (name, pos, area) SELECT CONCAT('p', seq), POINT(seq, -seq), IF(seq MOD 2, NULL, ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))')) FROM seq_1_to_200`,
	`CREATE TABLE rt.places_inno (id INT PRIMARY KEY, pos GEOMETRY NOT NULL, SPATIAL KEY sp (pos)) ENGINE=InnoDB`,
	`INSERT INTO rt.places_inno SELECT seq, ST_GeomFromText(CONCAT('LINESTRING(0 0,', seq, ' ', seq, ')')) FROM seq_1_to_50`,
	`CREATE TABLE rt.versioned (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING`,
	`INSERT INTO rt.versioned VALUES (1, 1), (2, 2)`,
	`UPDATE rt.versioned SET v = 3 WHERE id = 1`,
	`CREATE TABLE rt.versioned_cols (id INT PRIMARY KEY, v INT, rs TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
  re TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME(rs, re)) WITH SYSTEM VERSIONING`,
	`INSERT INTO rt.versioned_cols (id, v) VALUES (1, 1)`,
	`CREATE TABLE rt.vparts (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING
  PARTITION BY SYSTEM_TIME (PARTITION p_hist HISTORY, PARTITION p_cur CURRENT)`,
	`INSERT INTO rt.vparts VALUES (1, 1), (2, 2)`,
	`UPDATE rt.vparts SET v = v + 10`,
	`CREATE TABLE rt.vauto (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING
  PARTITION BY SYSTEM_TIME INTERVAL 1 YEAR STARTS '2020-01-01 00:00:00' AUTO`,
	`INSERT INTO rt.vauto VALUES (1, 1)`,
	`UPDATE rt.vauto SET v = 2`,
	// Application-time periods, long unique keys (hashed), descending and
	// ignored indexes, compressed columns, an index on a virtual column,
	// table options.
	`CREATE TABLE rt.booked (id INT NOT NULL, room INT NOT NULL, s DATE NOT NULL, e DATE NOT NULL, note BLOB, body TEXT COMPRESSED,
  v_room INT AS (room * 10) VIRTUAL, PERIOD FOR stay(s, e), UNIQUE KEY u_room (room, stay WITHOUT OVERLAPS), UNIQUE KEY u_note (note),
  KEY k_desc (s DESC, id), KEY k_ign (e) IGNORED, KEY k_virt (v_room), PRIMARY KEY (id))
  ENGINE=InnoDB ROW_FORMAT=DYNAMIC STATS_PERSISTENT=1 STATS_SAMPLE_PAGES=7 CHECKSUM=1 PACK_KEYS=0`,
	`INSERT INTO rt.booked (id, room, s, e, note, body) VALUES (1, 1, '2024-01-01', '2024-01-05', 'n1', REPEAT('b', 500)), (2, 1, '2024-01-05', '2024-01-09', NULL, NULL)`,
	`CREATE TABLE rt.ftfirst (id INT PRIMARY KEY, t TEXT, v INT, g POINT NOT NULL, FULLTEXT KEY ft (t), SPATIAL KEY sp (g), KEY kv (v)) ENGINE=InnoDB`,
	`INSERT INTO rt.ftfirst VALUES (1, 'some words', 1, POINT(1, 1))`,
	`CREATE TABLE rt.mem (id INT PRIMARY KEY, v VARCHAR(10), KEY USING BTREE (v)) ENGINE=MEMORY MAX_ROWS=1000`,
	`INSERT INTO rt.mem VALUES (1, 'a'), (2, 'b')`,
	`CREATE TABLE rt.checked (id INT PRIMARY KEY, qty INT CHECK (qty >= 0), secret VARCHAR(10) INVISIBLE DEFAULT 'x',
  created DATETIME DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, CONSTRAINT c_pos CHECK (id > 0)) COMMENT 'checks'`,
	`INSERT INTO rt.checked (id, qty, secret, created) VALUES (1, 5, 'hidden', '2020-01-01 00:00:00')`,
	// A TIMESTAMP default is a point in time: SHOW CREATE TABLE prints it in
	// the session's time zone (this one is created at +02:00).
	`CREATE TABLE rt.stamped (id INT PRIMARY KEY, ts TIMESTAMP NOT NULL DEFAULT '2020-01-01 00:00:00', dt DATETIME DEFAULT '2020-01-01 00:00:00')`,
	`INSERT INTO rt.stamped (id) VALUES (1)`,
	`CREATE TABLE rt.autoinc (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT) AUTO_INCREMENT=1000`,
	`INSERT INTO rt.autoinc (v) VALUES (1), (2), (3)`,
	`DELETE FROM rt.autoinc WHERE id > 1000`, // the counter stays at 1003
	`CREATE SEQUENCE rt.seq_neg START WITH -1 INCREMENT BY -1 MINVALUE -100 MAXVALUE -1 CACHE 5 CYCLE ENGINE=Aria COMMENT 'counts down'`,
	`SELECT NEXTVAL(rt.seq_neg), NEXTVAL(rt.seq_neg)`,
	// Routines: characteristics, another definer, and a body that parses
	// only under the sql_mode it was created with.
	`SET SESSION sql_mode = 'PIPES_AS_CONCAT,ANSI_QUOTES'`,
	`CREATE DEFINER = 'app'@'%' FUNCTION rt.f_concat(a VARCHAR(10), b VARCHAR(10)) RETURNS VARCHAR(20) CHARSET utf8mb4
  DETERMINISTIC NO SQL SQL SECURITY INVOKER COMMENT 'pipes concatenate here' RETURN a || "b" || b`,
	`SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'`,
	`CREATE PROCEDURE rt.p_invoker(IN n INT, INOUT acc BIGINT) MODIFIES SQL DATA SQL SECURITY INVOKER COMMENT 'sums 0..n-1 into acc'
  BEGIN DECLARE i INT DEFAULT 0; WHILE i < n DO SET acc = acc + i; SET i = i + 1; END WHILE; END`,
	`CREATE FUNCTION rt.f_reads() RETURNS INT NOT DETERMINISTIC READS SQL DATA COMMENT 'counts' RETURN (SELECT COUNT(*) FROM rt.big)`,
	"CREATE DEFINER = `app`@`%` PROCEDURE rt.p_definer() CONTAINS SQL SELECT 1",
	"CREATE AGGREGATE FUNCTION rt.f_agg(x INT) RETURNS INT DETERMINISTIC BEGIN DECLARE s INT DEFAULT 0; DECLARE CONTINUE HANDLER FOR NOT FOUND RETURN s; LOOP FETCH GROUP NEXT ROW; SET s = s + x; END LOOP; END",
	// An Oracle-mode package: specification, then body.
	"SET SESSION sql_mode = 'ORACLE'",
	"CREATE PACKAGE rt.pkg AS FUNCTION twice(x INT) RETURN INT; END",
	"CREATE PACKAGE BODY rt.pkg AS FUNCTION twice(x INT) RETURN INT AS BEGIN RETURN x * 2; END; END",
	"SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
	// Triggers: four before-insert ones ordered with PRECEDES and FOLLOWS
	// (their order is a, ab, b, c), another definer, another sql_mode.
	`CREATE TABLE rt.audited (id INT PRIMARY KEY, v INT, log VARCHAR(100) NOT NULL DEFAULT '')`,
	`CREATE TRIGGER rt.aud_bi_b BEFORE INSERT ON rt.audited FOR EACH ROW SET NEW.log = CONCAT(NEW.log, 'b')`,
	`CREATE TRIGGER rt.aud_bi_a BEFORE INSERT ON rt.audited FOR EACH ROW PRECEDES aud_bi_b SET NEW.log = CONCAT(NEW.log, 'a')`,
	`CREATE TRIGGER rt.aud_bi_c BEFORE INSERT ON rt.audited FOR EACH ROW FOLLOWS aud_bi_b SET NEW.log = CONCAT(NEW.log, 'c')`,
	`CREATE TRIGGER rt.aud_bi_ab BEFORE INSERT ON rt.audited FOR EACH ROW FOLLOWS aud_bi_a SET NEW.log = CONCAT(NEW.log, '+')`,
	"CREATE DEFINER = `app`@`%` TRIGGER rt.aud_au AFTER UPDATE ON rt.audited FOR EACH ROW SET @old_v = OLD.v",
	`SET SESSION sql_mode = 'ANSI_QUOTES'`,
	`CREATE TRIGGER rt.aud_bd BEFORE DELETE ON rt.audited FOR EACH ROW SET @"deleted" = OLD.id`,
	`SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'`,
	`INSERT INTO rt.audited (id, v) VALUES (1, 1)`,
	// Events: at a time, every interval with STARTS and ENDS, enabled,
	// disabled on a replica, another definer, a comment.
	`CREATE EVENT rt.ev_once ON SCHEDULE AT '2035-06-01 12:00:00' ON COMPLETION PRESERVE ENABLE COMMENT 'once, kept' DO UPDATE rt.nopk SET a = a`,
	`CREATE EVENT rt.ev_replica ON SCHEDULE EVERY 2 HOUR STARTS '2031-01-01 00:00:00' ENDS '2032-01-01 00:00:00' DISABLE ON SLAVE DO DELETE FROM rt.nopk WHERE a < -1`,
	"CREATE DEFINER = `app`@`%` EVENT rt.ev_every ON SCHEDULE EVERY '1:30' HOUR_MINUTE STARTS '2030-03-30 01:30:00' ENABLE DO SELECT 1",
	// Objects created by a latin1 client: they keep that character set
	// (string literals in their bodies are latin1), é included.
	"SET NAMES latin1",
	"CREATE FUNCTION rt.f_latin1(s VARCHAR(10)) RETURNS VARCHAR(20) CHARSET latin1 DETERMINISTIC RETURN CONCAT(s, '\xe9')",
	"CREATE VIEW rt.v_latin1 AS SELECT id, CONCAT(v, '\xe9') AS ve FROM rt.big WHERE id < 3",
	"CREATE TRIGGER rt.aud_bu BEFORE UPDATE ON rt.audited FOR EACH ROW SET NEW.log = CONCAT(NEW.log, '\xe9')",
	"CREATE EVENT rt.ev_latin1 ON SCHEDULE EVERY 1 WEEK STARTS '2030-01-01 00:00:00' DISABLE DO UPDATE rt.audited SET log = '\xe9' WHERE id < 0",
	"SET NAMES utf8mb4",
	// An event whose time has passed since it was created, not preserved:
	// the server keeps it until it runs (never, while disabled), but drops
	// one created with such a schedule at once.
	"SET SESSION timestamp = UNIX_TIMESTAMP('2020-01-01 00:00:00')",
	"CREATE EVENT rt.ev_missed ON SCHEDULE AT '2021-01-01 00:00:00' ON COMPLETION NOT PRESERVE DISABLE DO DELETE FROM nopk",
	"SET SESSION timestamp = DEFAULT",
	// Views: each algorithm, security and check option.
	`CREATE ALGORITHM = MERGE SQL SECURITY INVOKER VIEW rt.v_merge AS SELECT id, v FROM rt.big WHERE id < 100 WITH CASCADED CHECK OPTION`,
	"CREATE ALGORITHM = TEMPTABLE DEFINER = `app`@`%` SQL SECURITY DEFINER VIEW rt.v_temp AS SELECT COUNT(*) AS n FROM rt.big",
	`CREATE VIEW rt.v_local AS SELECT * FROM rt.v_merge WHERE id > 0 WITH LOCAL CHECK OPTION`,
	// A view that calls a stored function: it needs the function first.
	`CREATE VIEW rt.v_func AS SELECT id, rt.f_double(id) AS twice FROM rt.big WHERE id < 10`,
}

func loadTypes(t *testing.T, m *testenv.MariaDB) {
	t.Helper()
	var stmts []string
	for _, s := range typesSchema {
		if strings.Contains(s, "rt.a_view") {
			stmts = append(stmts, typesSchemaLate) // a_view needs z_base_view first at creation time
		}
		if strings.HasPrefix(s, "ANALYZE") {
			stmts = append(stmts, objectsSchema...)
		}
		stmts = append(stmts, s)
	}
	m.Exec(t, stmts...)
}

func TestRoundTripEveryType(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "rt-src")
	dst := startMariaDB(t, "rt-dst")
	loadTypes(t, src)

	var phases sync.Map
	progress := func(p engines.Progress) { phases.Store(p.Phase, p) }
	a, res := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true, Parallel: 3, Progress: progress})
	if v, ok := phases.Load("done"); !ok || v.(engines.Progress).RowsDone != res.Rows || v.(engines.Progress).TablesDone != res.Tables {
		t.Errorf("backup progress at the end: %+v, result %+v", v, res)
	}
	if res.Rows == 0 || res.Tables < 10 {
		t.Fatalf("backup result %+v", res)
	}
	if a.cp == nil || a.cp.BinlogFile == "" || a.cp.BinlogPosition == 0 || a.cp.GtidSet == "" {
		t.Errorf("consistency point not recorded: %v", a.cp)
	}
	if a.server == nil || a.server.Flavor != "mariadb" {
		t.Errorf("server info: %v", a.server)
	}
	pieces := 0
	for name := range a.streams {
		if strings.HasPrefix(name, "data/rt/big/") {
			pieces++
		}
	}
	if pieces < 3 {
		t.Errorf("rt.big was dumped in %d pieces, want several", pieces)
	}

	rres := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 3, Progress: progress})
	if v, ok := phases.Load("indexes"); !ok || v.(engines.Progress).BytesTotal == 0 {
		t.Errorf("restore progress: %+v", v)
	}
	if rres.Rows != res.Rows {
		t.Errorf("restored %d rows, backed up %d", rres.Rows, res.Rows)
	}
	srcDB, dstDB := src.DB(t), dst.DB(t)
	testenv.Compare(t, srcDB, dstDB, "rt", "rt2")
	compareSchema(t, srcDB, dstDB, []string{"rt", "rt2"}, nil)

	// Values that checksums could hide: read them back as text.
	var floatText, bitText, geoText, tsText, seqNext string
	if err := dstDB.QueryRow("SELECT CONCAT(c_float+0e0), HEX(c_bit64), ST_AsText(c_geo), CONCAT(CONVERT_TZ(c_ts, @@session.time_zone, '+00:00')) FROM rt.types WHERE id = 0").
		Scan(&floatText, &bitText, &geoText, &tsText); err != nil {
		t.Fatal(err)
	}
	if floatText != "1.2345677614212036" || bitText != "FFFFFFFFFFFFFFFF" || geoText != "POLYGON((0 0,10 0,10 10,0 0))" || tsText != "2038-01-19 03:14:07.999999" {
		t.Errorf("restored row 0: float %s, bit %s, geometry %s, timestamp %s", floatText, bitText, geoText, tsText)
	}
	// System-versioned tables keep every row version and its period.
	for _, q := range []string{
		"SELECT id, v, CONCAT(row_start), CONCAT(row_end) FROM rt.versioned FOR SYSTEM_TIME ALL",
		"SELECT id, v, CONCAT(rs), CONCAT(re) FROM rt.versioned_cols FOR SYSTEM_TIME ALL",
	} {
		want, got := queryStrings(t, srcDB, q), queryStrings(t, dstDB, q)
		if len(want) < 2 && strings.Contains(q, "rt.versioned ") || strings.Join(want, "\n") != strings.Join(got, "\n") {
			t.Errorf("%s\nsource:\n%s\nrestored:\n%s", q, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
	if err := dstDB.QueryRow("SELECT NEXTVAL(rt.seq1)").Scan(&seqNext); err != nil || seqNext < "110" {
		t.Errorf("sequence continues at %s (%v), want ≥ 110", seqNext, err)
	}
}

// TestOneKeyValue backs up a table whose size says many pieces but whose
// key holds one value (stale estimates after a mass delete, or the empty
// partitions of a system-versioned table): one piece, not a panic.
func TestOneKeyValue(t *testing.T) {
	t.Parallel()
	m := startMariaDB(t, "onekey")
	m.Exec(t, "CREATE DATABASE ok", "CREATE TABLE ok.t (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO ok.t VALUES (7, 'seven')", "ANALYZE TABLE ok.t")
	tiny := &Engine{PieceRows: 1, PieceBytes: 1}
	a, res := backupMem(t, tiny, engines.BackupParams{DSN: m.DSN, Databases: []string{"ok"}})
	if res.Rows != 1 {
		t.Fatalf("backed up %d rows, want 1", res.Rows)
	}
	restoreMem(t, tiny, a, engines.RestoreParams{DSN: m.DSN, RenameDB: map[string]string{"ok": "ok2"}})
	db := m.DB(t)
	if got := queryStrings(t, db, "SELECT id, v FROM ok2.t"); strings.Join(got, ",") != "7 | seven" {
		t.Errorf("restored %v", got)
	}
}

// compareSchema compares tables' definitions (index order aside) and every
// view, routine, trigger and event by definition; rename maps source
// schemas to target ones.
func compareSchema(t *testing.T, a, b *sql.DB, schemas []string, rename map[string]string) {
	t.Helper()
	for _, s := range schemas {
		ts := s
		if r, ok := rename[s]; ok {
			ts = r
		}
		for _, q := range []string{
			"SELECT TABLE_NAME, TABLE_TYPE, IFNULL(ENGINE, ''), TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1",
			"SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, IFNULL(COLUMN_DEFAULT, 'NULL'), EXTRA, IFNULL(CHARACTER_SET_NAME, ''), IFNULL(GENERATION_EXPRESSION, '') FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY 1, ORDINAL_POSITION",
			"SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME, INDEX_TYPE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? ORDER BY 1, 2, 4",
			"SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? ORDER BY 1",
			"SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY 1",
			"SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, IS_DETERMINISTIC, SQL_MODE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY 1",
			"SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_STATEMENT, ACTION_TIMING, SQL_MODE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY 1",
			"SELECT EVENT_NAME, EVENT_DEFINITION, INTERVAL_VALUE, STATUS, CONCAT(STARTS) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY 1",
		} {
			want, got := queryStrings(t, a, q, s), queryStrings(t, b, q, ts)
			for i := range got {
				for from, to := range rename {
					got[i] = strings.ReplaceAll(got[i], "`"+to+"`.", "`"+from+"`.")
				}
			}
			if strings.Join(want, "\n") != strings.Join(got, "\n") {
				t.Errorf("schema %s differs for %s\nsource:\n%s\ntarget:\n%s", s, q[:60], strings.Join(want, "\n"), strings.Join(got, "\n"))
			}
		}
	}
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer func() { _ = rows.Close() }()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, v := range vals {
			parts = append(parts, v.String)
		}
		out = append(out, strings.Join(parts, " | "))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}
