package apply

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/mysqlx"
)

// applySQL is the fallback that needs no replication privilege: the
// planned events become one binlog stream (magic, Format_description, the
// transactions of every file in order) that one mariadb-binlog reads from
// its standard input and one mariadb client applies, in one session, so a
// temporary table created in one file is there in the next. GTIDs are kept
// (mariadb-binlog sets gtid_domain_id, server_id and gtid_seq_no), which
// needs the BINLOG REPLAY privilege or SUPER.
func applySQL(ctx context.Context, db *sql.DB, t *target, dsn *mysqlx.DSN, p Params, plan *PlanResult, res *Result, progress func(Progress)) (err error) {
	var binlogProg, clientProg string
	if t.mysql != nil {
		// MySQL's own decoder: MariaDB's cannot read MySQL 8.0's events
		// (it prints them as unknown) and sets MariaDB's session variables.
		if binlogProg, err = lookMySQLBinlog(ctx, p.MariaDBBinlog); err != nil {
			return err
		}
		clientProg, err = lookProgram(p.MariaDB, "mysql")
	} else {
		if binlogProg, err = lookProgram(p.MariaDBBinlog, "mariadb-binlog", "mysqlbinlog"); err != nil {
			return err
		}
		clientProg, err = lookProgram(p.MariaDB, "mariadb", "mysql")
	}
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return mysqlx.Translate("connecting to the target", err)
	}
	defer func() { _ = conn.Close() }()
	g := &globals{conn: conn}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if perr := g.putBack(cctx); perr != nil {
			err = errors.Join(err, perr)
		}
	}()
	if err := relaxStrict(ctx, g, t, t.logBin && !p.NoBinlog, res); err != nil {
		return fmt.Errorf("%w (the sql method binlogs on a target with gtid_strict_mode=1; that needs the privilege to turn it off for the apply)", err)
	}

	// The client's connection settings, password in a file only we can read.
	dir, err := os.MkdirTemp("", "tidemark-apply-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	cfg := dsn.Config()
	var ini strings.Builder
	ini.WriteString("[client]\n")
	fmt.Fprintf(&ini, "user=%s\npassword=%s\n", optValue(cfg.User), optValue(cfg.Passwd))
	switch cfg.Net {
	case "unix":
		fmt.Fprintf(&ini, "socket=%s\n", optValue(cfg.Addr))
	default:
		host, port, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			host, port = cfg.Addr, ""
		}
		fmt.Fprintf(&ini, "host=%s\nprotocol=tcp\n", optValue(host))
		if port != "" {
			fmt.Fprintf(&ini, "port=%s\n", port)
		}
	}
	cnf := dir + "/client.cnf"
	if err := os.WriteFile(cnf, []byte(ini.String()), 0o600); err != nil {
		return err
	}

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	decArgs := []string{"-"}
	if p.NoBinlog {
		// Each session of the output starts with SET sql_log_bin=0.
		decArgs = []string{"--disable-log-bin", "-"}
	}
	dec := exec.CommandContext(cctx, binlogProg, decArgs...)
	// The client takes statements up to 1 GiB (a row event of 20 MB becomes a
	// BINLOG statement of 27); the server's max_allowed_packet still applies.
	cli := exec.CommandContext(cctx, clientProg, "--defaults-extra-file="+cnf, "--binary-mode", "--batch", "--max-allowed-packet=1G")
	var decErr, cliErr, cliOut tail
	dec.Stderr = &decErr
	cli.Stderr = &cliErr
	cli.Stdout = &cliOut
	in, err := dec.StdinPipe()
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	dec.Stdout = pw
	cli.Stdin = pr
	if err := cli.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		return fmt.Errorf("start %s: %w", clientProg, err)
	}
	_ = pr.Close()
	if err := dec.Start(); err != nil {
		_ = pw.Close()
		cancel()
		_ = cli.Wait()
		return fmt.Errorf("start %s: %w", binlogProg, err)
	}
	_ = pw.Close()

	werr := writeStream(cctx, in, p.Files, plan, progress)
	cerr := in.Close()
	derr := dec.Wait()
	clerr := cli.Wait()
	switch {
	case clerr != nil:
		return fmt.Errorf("%s applying the events: %w: %s", clientProg, clerr, cliErr.String())
	case derr != nil:
		return fmt.Errorf("%s decoding the events: %w: %s", binlogProg, derr, decErr.String())
	case werr != nil:
		return werr
	case cerr != nil:
		return cerr
	}
	return ctx.Err()
}

func optValue(s string) string {
	if strings.ContainsAny(s, " #;\"'\\\n") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
	}
	return s
}

func lookProgram(given string, names ...string) (string, error) {
	if given != "" {
		return exec.LookPath(given)
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("the sql method needs %s in PATH (Debian: apt-get install mariadb-client)", strings.Join(names, " or "))
}

// lookMySQLBinlog finds MySQL's mysqlbinlog (given, or in PATH), refusing
// MariaDB's, which Debian installs under that name too.
func lookMySQLBinlog(ctx context.Context, given string) (string, error) {
	name := given
	if name == "" {
		name = "mysqlbinlog"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("the sql method on a MySQL target needs MySQL's mysqlbinlog in PATH, of the target's version or newer (Debian/Ubuntu: apt-get install mysql-client from MySQL's APT repository; RHEL: mysql-community-client), or use the replication method")
	}
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", path, err, bytes.TrimSpace(out))
	}
	if bytes.Contains(bytes.ToLower(out), []byte("mariadb")) {
		return "", fmt.Errorf("the sql method on a MySQL target needs MySQL's mysqlbinlog, and %s is MariaDB's (%s), which cannot decode MySQL 8.0's events: install MySQL's client programs (mysql-client from MySQL's APT repository, mysql-community-client) or use the replication method", path, bytes.TrimSpace(out))
	}
	return path, nil
}

// writeStream writes the planned events as one binlog stream.
func writeStream(ctx context.Context, w io.Writer, files []File, plan *PlanResult, progress func(Progress)) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.WriteString(binlogMagic); err != nil {
		return err
	}
	var sent int64
	wroteFDE := false
	for i := range files {
		fp := plan.files[i]
		if len(fp.ranges) == 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rc, err := files[i].Open(ctx)
		if err != nil {
			return fmt.Errorf("open binlog file %s (file %d): %w", files[i].Name, i+1, err)
		}
		rd, err := newReader(rc, files[i].Name)
		if err != nil {
			_ = rc.Close()
			return err
		}
		r := 0
		for {
			h, ev, pos, err := rd.next()
			if errors.Is(err, io.EOF) || errors.Is(err, errTruncated) {
				break
			}
			if err != nil {
				_ = rc.Close()
				return err
			}
			if h.Type == evFormatDesc {
				fdeEv := append([]byte(nil), ev...)
				fdeEv[17] &^= flagInUse
				if wroteFDE {
					// Not a server restart to the decoder: keep the session's
					// temporary tables across files.
					binary.LittleEndian.PutUint32(fdeEv[headerLen+fdeCreatedOffset:], 0)
				}
				if rd.fde.checksum {
					setCRC(fdeEv)
				}
				if _, err := bw.Write(fdeEv); err != nil {
					_ = rc.Close()
					return err
				}
				wroteFDE = true
				continue
			}
			for r < len(fp.ranges) && pos >= fp.ranges[r][1] {
				r++
			}
			if r == len(fp.ranges) {
				break
			}
			if pos < fp.ranges[r][0] {
				continue
			}
			if _, err := bw.Write(ev); err != nil {
				_ = rc.Close()
				return err
			}
			sent += int64(len(ev))
		}
		_ = rc.Close()
		progress(Progress{Phase: "apply", Transactions: plan.Transactions, BytesSent: sent, Bytes: plan.Bytes})
	}
	return bw.Flush()
}

// tail keeps the last 4 KiB written to it (a program's stderr).
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(bytes.TrimSpace(t.b)) }
