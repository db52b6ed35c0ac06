#!/usr/bin/env bash
# A whole Tidemark fleet on one machine, the way an operator builds a real
# one: MinIO as the repository's store, three controllers forming a Raft
# cluster under their own CA (the first bootstraps it, the others join with a
# join token), two MariaDB servers, each with an agent that gets its
# certificate with a one-time join token. Everything listens on free loopback
# ports and keeps its state, logs and pid files under DIR.
#
#   deploy/local/fleet.sh up DIR     start it; prints the exports for the CLI (also in DIR/env)
#   deploy/local/fleet.sh demo DIR   back up db1 through the fleet, restore it onto db2, compare
#   deploy/local/fleet.sh down DIR   stop every process it started (the state stays in DIR)
#
# Programs: $TIDEMARK (default: ./tidemark at the repository root, built by
# `make build`, else tidemark from PATH), $MINIO (default: .bin/minio, else
# PATH), mariadbd, mariadb-install-db and mariadb from PATH; curl (creates
# the bucket), python3 (free ports).
set -euo pipefail
# DIR holds the CA key file, join tokens, S3 keys and the database password.
umask 077

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

usage() {
	echo "usage: $0 up|demo|down DIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
ACTION="$1"
DIR="$2"

say() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'fleet: %s\n' "$*" >&2
	exit 1
}

program() { # program VAR DEFAULT NAME: the path of a program
	local given="$1" default="$2" name="$3"
	if [ -n "$given" ]; then
		echo "$given"
	elif [ -x "$default" ]; then
		echo "$default"
	elif command -v "$name" >/dev/null; then
		command -v "$name"
	else
		die "$name not found: set \$$(echo "$name" | tr a-z A-Z) or put it on PATH"
	fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start NAME CMD...: runs CMD in the background with its output in
# DIR/log/NAME.log, and records its pid in DIR/run/NAME.pid. Nothing of it
# stays attached to our stdout or stderr, so the caller of `up` is not held.
start() {
	local name="$1"
	shift
	"$@" </dev/null >"$DIR/log/$name.log" 2>&1 &
	echo $! >"$DIR/run/$name.pid"
}

# wait_for DESC SECONDS NAME CMD...: retries CMD every 0.2 s; fails with
# the tail of NAME's log when it does not succeed in time or NAME exits.
wait_for() {
	local desc="$1" secs="$2" name="$3"
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$(cat "$DIR/run/$name.pid")" 2>/dev/null; then
			tail -20 "$DIR/log/$name.log" >&2
			die "$name exited while waiting for $desc (log: $DIR/log/$name.log)"
		fi
		if [ $SECONDS -ge $deadline ]; then
			tail -20 "$DIR/log/$name.log" >&2
			die "timed out after ${secs}s waiting for $desc (log: $DIR/log/$name.log)"
		fi
		sleep 0.2
	done
}

sql() { # sql PORT ARGS...: as root over loopback
	local port="$1"
	shift
	mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" "$@"
}

# start_mariadb NAME: a fresh server on a free port; prints the port.
start_mariadb() {
	local name="$1" port
	port="$(free_port)"
	mkdir -p "$DIR/$name/tmp"
	mariadb-install-db --no-defaults --datadir="$DIR/$name/data" --auth-root-authentication-method=normal \
		--skip-test-db --user="$(id -un)" >"$DIR/log/$name-install.log" 2>&1 ||
		{
			cat "$DIR/log/$name-install.log" >&2
			die "mariadb-install-db for $name failed"
		}
	local user_arg=()
	[ "$(id -u)" = 0 ] && user_arg=(--user=root)
	start "$name" mariadbd --no-defaults --datadir="$DIR/$name/data" --port="$port" --bind-address=127.0.0.1 \
		--socket="$DIR/$name/sock" --pid-file="$DIR/$name/mariadbd.pid" --tmpdir="$DIR/$name/tmp" \
		--log-bin=binlog --binlog-format=ROW --server-id="$port" --local-infile=1 --skip-name-resolve \
		--innodb-buffer-pool-size=64M --innodb-log-file-size=48M --skip-performance-schema "${user_arg[@]}"
	echo "$port" >"$DIR/$name/port"
}

up() {
	[ -e "$DIR/env" ] && die "$DIR holds a fleet already (run: $0 down $DIR, or use a new DIR)"
	mkdir -p "$DIR/log" "$DIR/run"
	DIR="$(cd "$DIR" && pwd)"
	# A failed start leaves nothing running.
	trap 'rc=$?; if [ $rc -ne 0 ]; then echo "fleet: up failed; stopping what it started" >&2; down; fi' EXIT
	TIDEMARK="$(program "${TIDEMARK:-}" "$ROOT/tidemark" tidemark)"
	MINIO="$(program "${MINIO:-}" "$ROOT/.bin/minio" minio)"

	say "MinIO"
	local s3port key secret bucket=tidemark
	s3port="$(free_port)"
	key="fleet$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	secret="$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	mkdir -p "$DIR/minio/data" "$DIR/minio/certs"
	MINIO_ROOT_USER="$key" MINIO_ROOT_PASSWORD="$secret" MINIO_BROWSER=off MINIO_UPDATE=off \
		start minio "$MINIO" server "$DIR/minio/data" --address "127.0.0.1:$s3port" \
		--console-address "127.0.0.1:$(free_port)" --certs-dir "$DIR/minio/certs"
	# The bucket, with a signed request (MinIO's own client is not needed).
	wait_for "MinIO to create the bucket" 30 minio \
		curl -fsS -X PUT --user "$key:$secret" --aws-sigv4 "aws:amz:us-east-1:s3" "http://127.0.0.1:$s3port/$bucket"
	export AWS_ACCESS_KEY_ID="$key" AWS_SECRET_ACCESS_KEY="$secret"
	local repo="s3://$bucket/fleet?endpoint=127.0.0.1:$s3port&tls=false&region=us-east-1"

	say "two MariaDB servers"
	start_mariadb db1
	start_mariadb db2
	local db pw
	pw="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	echo "$pw" >"$DIR/mysql-password"
	chmod 600 "$DIR/mysql-password"
	for db in db1 db2; do
		wait_for "$db to accept connections" 30 "$db" sql "$(cat "$DIR/$db/port")" -e 'SELECT 1'
		# The agents' account. Backups need far less (see the README's
		# grants); a restore recreates schemas, tables, routines, users and
		# grants, which takes all privileges.
		sql "$(cat "$DIR/$db/port")" -e "CREATE USER tidemark@'127.0.0.1' IDENTIFIED BY '$pw';
			GRANT ALL PRIVILEGES ON *.* TO tidemark@'127.0.0.1' WITH GRANT OPTION;"
	done

	say "repository $repo"
	"$TIDEMARK" repo init --repo "$repo" >"$DIR/log/repo-init.log" 2>&1 ||
		{
			cat "$DIR/log/repo-init.log" >&2
			die "repo init failed"
		}

	say "three controllers"
	# The cluster's own CA: its key sealed with this file, the same for every node.
	head -c 32 /dev/urandom >"$DIR/ca.key"
	chmod 600 "$DIR/ca.key"
	local i addrs=() raft
	for i in 1 2 3; do
		addrs+=("127.0.0.1:$(free_port)")
	done
	local all
	all="$(IFS=,; echo "${addrs[*]}")"
	# Loopback-fast Raft timers, as tidemark dev uses; the defaults suit a LAN.
	local timing=(--raft-heartbeat-timeout 500ms --raft-election-timeout 500ms --raft-leader-lease-timeout 250ms
		--heartbeat-interval 1s --lease-duration 10s)
	raft="127.0.0.1:$(free_port)"
	start c1 "$TIDEMARK" controller --node-id c1 --data-dir "$DIR/c1" --grpc-addr "${addrs[0]}" --raft-addr "$raft" \
		--bootstrap --ca-key-file "$DIR/ca.key" --repo "$repo" "${timing[@]}"
	export TIDEMARK_CREDENTIALS="$DIR/c1/tls/admin" TIDEMARK_CONTROLLER="${addrs[0]}"
	leads() { "$TIDEMARK" cluster status -o json | grep -q '"leader":"c1"'; }
	wait_for "c1 to lead a cluster" 30 c1 leads
	"$TIDEMARK" token create --role controller --uses 2 --ttl 10m >"$DIR/controller.token" 2>"$DIR/log/token.log"
	for i in 2 3; do
		raft="127.0.0.1:$(free_port)"
		# Without the CLI's admin credential in the environment: the node
		# gets its own from the cluster CA.
		start "c$i" env -u TIDEMARK_CREDENTIALS -u TIDEMARK_CONTROLLER "$TIDEMARK" controller --node-id "c$i" --data-dir "$DIR/c$i" --grpc-addr "${addrs[$((i - 1))]}" \
			--raft-addr "$raft" --join "${addrs[0]}" --join-token "$DIR/controller.token" --ca-key-file "$DIR/ca.key" \
			--repo "$repo" "${timing[@]}"
	done
	export TIDEMARK_CONTROLLER="$all"
	three_voters() { [ "$("$TIDEMARK" cluster status -o json | grep -o '"voter":true' | wc -l)" = 3 ]; }
	wait_for "c2 and c3 to join" 60 c3 three_voters

	say "two agents"
	for db in db1 db2; do
		"$TIDEMARK" token create --role agent --uses 1 --ttl 10m >"$DIR/$db.token" 2>>"$DIR/log/token.log"
		start "agent-$db" env -u TIDEMARK_CREDENTIALS TIDEMARK_MYSQL_PASSWORD_FILE="$DIR/mysql-password" "$TIDEMARK" agent --name "$db" \
			--controller "$all" --mysql "tidemark@tcp(127.0.0.1:$(cat "$DIR/$db/port"))/" --repo "$repo" \
			--credentials "$DIR/agent-$db" --join-token "$DIR/$db.token" --labels env=local
	done
	both_connected() { [ "$("$TIDEMARK" agents -o json | grep -o '"connected":true' | wc -l)" = 2 ]; }
	wait_for "both agents to connect" 60 agent-db2 both_connected

	cat >"$DIR/env" <<EOF
export TIDEMARK_CONTROLLER=$all
export TIDEMARK_CREDENTIALS=$DIR/c1/tls/admin
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export FLEET_REPO='$repo'
export FLEET_DB1_PORT=$(cat "$DIR/db1/port")
export FLEET_DB2_PORT=$(cat "$DIR/db2/port")
EOF
	say "up: controllers $all, MinIO 127.0.0.1:$s3port, db1 on $(cat "$DIR/db1/port"), db2 on $(cat "$DIR/db2/port")"
	cat "$DIR/env"
}

checksums() { # checksums PORT: every table of the demo schema with its checksum and row count
	local port="$1" t
	for t in $(sql "$port" -N -e "SELECT CONCAT(table_schema,'.',table_name) FROM information_schema.tables
		WHERE table_schema = 'shop' AND table_type = 'BASE TABLE' ORDER BY 1"); do
		echo "$t $(sql "$port" -N -e "CHECKSUM TABLE $t EXTENDED" | awk '{print $2}') $(sql "$port" -N -e "SELECT COUNT(*) FROM $t")"
	done
}

demo() {
	[ -e "$DIR/env" ] || die "no fleet in $DIR: run $0 up $DIR first"
	DIR="$(cd "$DIR" && pwd)"
	TIDEMARK="$(program "${TIDEMARK:-}" "$ROOT/tidemark" tidemark)"
	# shellcheck disable=SC1091
	. "$DIR/env"
	say "sample data on db1"
	sql "$FLEET_DB1_PORT" -e "CREATE DATABASE IF NOT EXISTS shop; USE shop;
		CREATE TABLE IF NOT EXISTS shop.customers (id INT PRIMARY KEY, name VARCHAR(100), country CHAR(2), KEY (country));
		CREATE TABLE IF NOT EXISTS shop.orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
			amount DECIMAL(12,2), note TEXT, KEY (customer_id));
		REPLACE INTO shop.customers SELECT seq, CONCAT('Customer ', seq), ELT(1 + seq % 3, 'PT', 'PL', 'JP') FROM seq_1_to_2000;
		INSERT INTO shop.orders (customer_id, amount, note) SELECT 1 + seq % 2000, seq * 1.25, CONCAT('order ', seq) FROM seq_1_to_20000;"
	say "tidemark backup --instance db1 --wait"
	local id
	id="$("$TIDEMARK" backup --instance db1 --wait | tail -1)"
	[ -n "$id" ] || die "the backup printed no id"
	"$TIDEMARK" backups --instance db1
	# --drop-existing (admin): a second demo replaces what the first restored.
	say "tidemark restore $id --to-instance db2 --drop-existing"
	"$TIDEMARK" restore "$id" --to-instance db2 --drop-existing
	say "comparing CHECKSUM TABLE and row counts"
	checksums "$FLEET_DB1_PORT" >"$DIR/db1.sums"
	checksums "$FLEET_DB2_PORT" >"$DIR/db2.sums"
	[ -s "$DIR/db1.sums" ] || die "no tables found on db1"
	if ! diff -u "$DIR/db1.sums" "$DIR/db2.sums" >&2; then
		die "db2 differs from db1 after the restore"
	fi
	say "demo passed: backup $id of db1 restored onto db2, $(wc -l <"$DIR/db1.sums") tables equal"
	echo "$id"
}

down() {
	[ -d "$DIR/run" ] || die "no fleet in $DIR (no $DIR/run)"
	local name pid
	# Agents first (they report their jobs ending), then the controllers,
	# then the servers and the store.
	for name in agent-db1 agent-db2 c3 c2 c1 db1 db2 minio; do
		[ -e "$DIR/run/$name.pid" ] || continue
		pid="$(cat "$DIR/run/$name.pid")"
		kill "$pid" 2>/dev/null || true
	done
	for name in agent-db1 agent-db2 c3 c2 c1 db1 db2 minio; do
		[ -e "$DIR/run/$name.pid" ] || continue
		pid="$(cat "$DIR/run/$name.pid")"
		for _ in $(seq 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "fleet: $name (pid $pid) did not stop in 15 s; killing it" >&2
			kill -9 "$pid" 2>/dev/null || true
		fi
		rm -f "$DIR/run/$name.pid"
	done
	rm -f "$DIR/env"
	say "down: every process stopped; state left in $DIR"
}

case "$ACTION" in
up) up ;;
demo) demo ;;
down) down ;;
*) usage ;;
esac
