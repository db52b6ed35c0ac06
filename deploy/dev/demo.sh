#!/usr/bin/env bash
# The demo: three sandbox MariaDB servers, a sample schema, `tidemark dev` (a
# single-node controller, a file:// repository and a local agent in one
# process), continuous binlog streaming, a backup through the controller, a
# restore into the second server, writes and an accidental DELETE on the
# source, a point-in-time restore into the third server to just before it,
# checksum comparisons and a short report. Everything lives under one
# temporary directory that is removed at the end, whatever happens.
#
#   make demo                      (builds ./tidemark and installs what is missing)
#   DEMO_ROWS=1000000 make demo    (bigger sysbench tables)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TIDEMARK="$ROOT/tidemark"
ROWS="${DEMO_ROWS:-200000}"
WORK="$(mktemp -d /tmp/tidemark-demo.XXXXXX)"

# Servers are started inside $(...) subshells, so their pids are kept in
# files, not in a shell variable the parent would never see.
cleanup() {
	local f pid
	if [ -e "$WORK/dev.pid" ]; then
		pid="$(cat "$WORK/dev.pid")"
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	for f in "$WORK"/*/mariadbd.pid; do
		[ -e "$f" ] || continue
		pid="$(cat "$f")"
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start_server NAME: initialises a datadir and starts mariadbd on a free port;
# prints the port.
start_server() {
	local name="$1" dir="$WORK/$1" port
	port="$(free_port)"
	mkdir -p "$dir/tmp"
	mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
		--skip-test-db --user="$(id -un)" >"$dir/install.log" 2>&1 ||
		{ cat "$dir/install.log" >&2; exit 1; }
	local user_arg=()
	[ "$(id -u)" = 0 ] && user_arg=(--user=root)
	mariadbd --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
		--socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" --tmpdir="$dir/tmp" \
		--log-bin=binlog --binlog-format=ROW --server-id="$port" --local-infile=1 \
		--skip-name-resolve --character-set-server=utf8mb4 --innodb-buffer-pool-size=256M \
		--innodb-flush-log-at-trx-commit=2 "${user_arg[@]}" >/dev/null 2>&1 &
	echo $! >"$dir/mariadbd.pid"
	for _ in $(seq 100); do
		mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" -e 'SELECT 1' >/dev/null 2>&1 && { echo "$port"; return; }
		sleep 0.1
	done
	echo "mariadbd $name did not start:" >&2
	tail -20 "$dir/error.log" >&2
	exit 1
}

sql() { local port="$1"; shift; mariadb --no-defaults --default-character-set=utf8mb4 -uroot -h127.0.0.1 -P"$port" "$@"; }

say "starting three sandbox MariaDB servers"
SRC="$(start_server source)"
DST="$(start_server target)"
PIT="$(start_server pitr)"
echo "source on 127.0.0.1:$SRC, target on 127.0.0.1:$DST, point-in-time target on 127.0.0.1:$PIT" >&2

say "loading a sample schema: sysbench 4 x $ROWS rows, plus a shop schema with every column type"
sql "$SRC" -e 'CREATE DATABASE sbtest'
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$SRC" --mysql-user=root \
	--mysql-db=sbtest --tables=4 --table-size="$ROWS" --threads=2 prepare >/dev/null
sql "$SRC" <<'SQL'
CREATE DATABASE shop;
USE shop;
CREATE TABLE customers (
  id INT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200),
  country CHAR(2),
  created DATETIME(6) NOT NULL,
  KEY (email)
);
CREATE TABLE orders (
  id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
  customer_id INT UNSIGNED NOT NULL,
  status ENUM('new','paid','shipped','returned') NOT NULL,
  amount DECIMAL(12,2) NOT NULL,
  weight DOUBLE,
  doc JSON,
  note TEXT,
  photo BLOB,
  placed TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
  KEY (customer_id),
  CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
);
INSERT INTO customers (name, email, country, created)
  SELECT CONCAT('Customer ', seq, IF(seq % 7 = 0, ' Łódź 🚲', '')), IF(seq % 11 = 0, NULL, CONCAT('c', seq, '@example.com')),
         ELT(1 + seq % 5, 'PT', 'PL', 'CH', 'DE', 'JP'), '2026-01-01' + INTERVAL seq SECOND + INTERVAL seq MICROSECOND
  FROM seq_1_to_20000;
INSERT INTO orders (customer_id, status, amount, weight, doc, note, photo, placed)
  SELECT 1 + seq % 20000, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned'), seq * 1.25, seq / 7,
         JSON_OBJECT('sku', CONCAT('SKU-', seq % 977), 'qty', seq % 5, 'gift', seq % 3 = 0),
         IF(seq % 4 = 0, '', CONCAT('Please deliver to the back door, order ', seq)),
         IF(seq % 50 = 0, RANDOM_BYTES(1024), NULL), '2026-06-01' + INTERVAL seq SECOND
  FROM seq_1_to_100000;
CREATE VIEW order_totals AS SELECT c.country, COUNT(*) AS orders, SUM(o.amount) AS total
  FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.country;
CREATE TRIGGER orders_paid BEFORE UPDATE ON orders FOR EACH ROW SET NEW.note = IF(NEW.status = 'paid' AND OLD.status <> 'paid', CONCAT(NEW.note, ' [paid]'), NEW.note);
SQL

REPO="file://$WORK/dev/repo"
export TIDEMARK_CONTROLLER="127.0.0.1:$(free_port)"
# Every connection is mutual TLS: tidemark dev makes its own CA and writes an
# admin credential for the CLI here (it prints this export too).
export TIDEMARK_CREDENTIALS="$WORK/dev/controller/tls/admin"
say "tidemark dev --data-dir $WORK/dev --mysql 'root@tcp(127.0.0.1:$SRC)/' --grpc-addr $TIDEMARK_CONTROLLER"
"$TIDEMARK" dev --data-dir "$WORK/dev" --mysql "root@tcp(127.0.0.1:$SRC)/" --grpc-addr "$TIDEMARK_CONTROLLER" \
	>"$WORK/dev.log" 2>&1 &
echo $! >"$WORK/dev.pid"
for i in $(seq 100); do
	"$TIDEMARK" agents -o json 2>/dev/null | grep -q '"connected":true' && break
	if [ "$i" = 100 ] || ! kill -0 "$(cat "$WORK/dev.pid")" 2>/dev/null; then
		echo "tidemark dev did not start:" >&2
		tail -20 "$WORK/dev.log" >&2
		exit 1
	fi
	sleep 0.2
done
"$TIDEMARK" agents

say "tidemark binlog start --instance local   (continuous binlog streaming into the repository)"
"$TIDEMARK" binlog start --instance local

say "tidemark backup --instance local --wait   (TIDEMARK_CONTROLLER=$TIDEMARK_CONTROLLER)"
t0=$(date +%s.%N)
ID="$("$TIDEMARK" backup --instance local --wait | tail -1)"
t1=$(date +%s.%N)
"$TIDEMARK" backups --instance local
# The repository's own listing carries the lock time for the report.
"$TIDEMARK" backups --repo "$REPO" -o json |
	python3 -c 'import json,sys; print(json.dumps([b for b in json.load(sys.stdin) if b["id"] == sys.argv[1]][0]))' "$ID" >"$WORK/backup.json"

say "tidemark restore $ID --to-mysql 'root@tcp(127.0.0.1:$DST)/'   (the controller tells where the backup is)"
"$TIDEMARK" restore "$ID" --controller "$TIDEMARK_CONTROLLER" --to-mysql "root@tcp(127.0.0.1:$DST)/"
t2=$(date +%s.%N)

say "comparing CHECKSUM TABLE and row counts of every table"
checksums() {
	local port="$1" t
	for t in $(sql "$port" -N -e "SELECT CONCAT(table_schema,'.',table_name) FROM information_schema.tables
		WHERE table_schema IN ('sbtest','shop') AND table_type='BASE TABLE' ORDER BY 1"); do
		echo "$t $(sql "$port" -N -e "CHECKSUM TABLE $t EXTENDED" | awk '{print $2}') $(sql "$port" -N -e "SELECT COUNT(*) FROM $t")"
	done
}
checksums "$SRC" >"$WORK/src.sums"
checksums "$DST" >"$WORK/dst.sums"
if ! diff -u "$WORK/src.sums" "$WORK/dst.sums"; then
	echo "DEMO FAILED: the restored data differs from the source" >&2
	exit 1
fi
say "writes after the backup, then an accident: DELETE FROM shop.orders"
sql "$SRC" -e "UPDATE shop.orders SET status = 'paid' WHERE id % 10 = 0;
	INSERT INTO shop.customers (name, email, country, created) VALUES ('After the backup', 'late@example.com', 'PT', NOW(6));
	CREATE TABLE shop.coupons (code VARCHAR(20) PRIMARY KEY, pct INT); INSERT INTO shop.coupons VALUES ('WELCOME', 10);"
BEFORE="$(sql "$SRC" -N -e 'SELECT @@gtid_binlog_pos')"
checksums "$SRC" >"$WORK/before.sums"
sql "$SRC" -e 'DELETE FROM shop.orders'
END="$(sql "$SRC" -N -e 'SELECT @@gtid_binlog_pos')"
for i in $(seq 100); do
	"$TIDEMARK" binlog status --instance local -o json | grep -q "\"gtid_position\":\"$END\"" && break
	[ "$i" = 100 ] && { echo "DEMO FAILED: the binlog stream did not reach $END" >&2; "$TIDEMARK" binlog status --instance local >&2; exit 1; }
	sleep 0.1
done
"$TIDEMARK" binlog status --instance local

say "tidemark restore --repo $REPO --instance local --to-gtid $BEFORE --to-mysql 'root@tcp(127.0.0.1:$PIT)/'   (just before the accident)"
t3=$(date +%s.%N)
"$TIDEMARK" restore --repo "$REPO" --instance local --to-gtid "$BEFORE" --to-mysql "root@tcp(127.0.0.1:$PIT)/"
t4=$(date +%s.%N)
checksums "$PIT" >"$WORK/pit.sums"
if ! diff -u "$WORK/before.sums" "$WORK/pit.sums"; then
	echo "DEMO FAILED: the point-in-time restore differs from the source just before the accident" >&2
	exit 1
fi

VIEWS="$(sql "$DST" -N -e "SELECT COUNT(*) FROM information_schema.views WHERE table_schema='shop'")"
TRIGGERS="$(sql "$DST" -N -e "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema='shop'")"

say "report"
python3 - "$WORK/backup.json" "$t0" "$t1" "$t2" "$WORK/src.sums" "$VIEWS" "$TRIGGERS" "$t3" "$t4" "$BEFORE" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
t0, t1, t2 = map(float, sys.argv[2:5])
t3, t4 = map(float, sys.argv[8:10])
tables = [l.split() for l in open(sys.argv[5])]
rows = sum(int(t[2]) for t in tables)
mib = lambda n: f"{n / 2**20:,.1f} MiB"
c = b.get("consistency", {})
print(f"  backup      {b['id']}")
print(f"  data        {len(tables)} tables, {rows:,} rows, {mib(b['size_bytes'])} logical, {mib(b['stored_bytes'])} stored "
      f"({b['size_bytes'] / max(b['stored_bytes'], 1):.1f}x)")
print(f"  backup      {t1 - t0:.2f} s ({b['size_bytes'] / 2**20 / (t1 - t0):.0f} MiB/s), write lock held {b['lock_ms']} ms")
print(f"  restore     {t2 - t1:.2f} s")
print(f"  consistent  binlog {c.get('binlog_file')}:{c.get('binlog_position')}, GTID {c.get('gtid_set') or '(none)'}")
print(f"  verified    CHECKSUM TABLE and row counts equal on all {len(tables)} tables; "
      f"{sys.argv[6]} view and {sys.argv[7]} trigger restored")
print(f"  pitr        {t4 - t3:.2f} s to GTID {sys.argv[10]}, just before DELETE FROM shop.orders: "
      f"every table equal to the source at that moment, the writes after the backup included")
PY
say "demo passed; cleaning up"
