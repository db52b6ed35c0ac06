package mysqlx

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
)

// Kinds of failure Translate recognizes; test with errors.Is.
var (
	ErrUnreachable    = errors.New("MySQL server unreachable")
	ErrAccessDenied   = errors.New("access denied")
	ErrPrivilege      = errors.New("missing privilege")
	ErrDiskFull       = errors.New("server out of disk space")
	ErrConnectionLost = errors.New("connection to the server lost")
	ErrTableChanged   = errors.New("table changed during the backup")
	ErrLocalInfile    = errors.New("LOAD DATA LOCAL INFILE refused")
	ErrTLSVerify      = errors.New("the server's TLS certificate failed verification")
)

// Error is a translated server or driver error: one sentence for the user
// that says what happened and what to do, plus the original error.
type Error struct {
	Kind error  // one of the Err* kinds
	Op   string // what we were doing, e.g. "taking the backup lock"
	Msg  string // the explanation and the fix
	Err  error  // the driver's error
}

func (e *Error) Error() string {
	if e.Op == "" {
		return e.Msg
	}
	return e.Op + ": " + e.Msg
}

func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// Server error numbers Translate knows.
const (
	erDBAccessDenied       = 1044
	erAccessDenied         = 1045
	erTableAccessDenied    = 1142
	erColumnAccessDenied   = 1143
	erSpecificAccessDenied = 1227
	erProcAccessDenied     = 1370
	erKillDenied           = 1095
	erRecordFileFull       = 1114
	erDiskFull             = 1021
	erErrorOnWrite         = 3
	erOutOfResources       = 1041
	erServerShutdown       = 1053
	erConnectionKilled     = 1927
	erQueryInterrupted     = 1317
	erTableDefChanged      = 1412
	erNotAllowedCommand    = 1148
	erLocalInfileDisabled  = 3948
	erClientLocalFiles     = 2068
	erServerGone           = 2006
	erServerLost           = 2013
)

// ServerErrorNumber returns the MySQL error number in err's chain, or 0.
func ServerErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Translate turns err into an *Error when it is one of the failures a user
// can act on, and otherwise wraps it with op. A nil err stays nil; an err that
// already is an *Error is returned unchanged, so the innermost op wins.
func Translate(op string, err error) error { return TranslateNeed(op, err, "") }

// TranslateNeed is Translate with the privileges op needs, named in the
// message when the server refuses op for lack of one (e.g. "RELOAD").
func TranslateNeed(op string, err error, need string) error {
	if err == nil {
		return nil
	}
	var te *Error
	if errors.As(err, &te) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	mk := func(kind error, msg string) error { return &Error{Kind: kind, Op: op, Msg: msg, Err: err} }
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case erAccessDenied:
			return mk(ErrAccessDenied, me.Message+": check the user name and password (without one in the DSN, it comes from "+PasswordEnv+" or the file "+PasswordEnv+"_FILE names)")
		case erDBAccessDenied, erTableAccessDenied, erColumnAccessDenied, erSpecificAccessDenied, erProcAccessDenied, erKillDenied:
			msg := "the user lacks a privilege: " + me.Message
			if need != "" {
				msg += "; grant it " + need
			}
			return mk(ErrPrivilege, msg)
		case erRecordFileFull, erDiskFull, erOutOfResources:
			return mk(ErrDiskFull, diskFullMsg(me.Message))
		case erErrorOnWrite:
			if strings.Contains(me.Message, "28") {
				return mk(ErrDiskFull, diskFullMsg(me.Message))
			}
		case erServerShutdown, erConnectionKilled, erServerGone, erServerLost:
			return mk(ErrConnectionLost, lostMsg(me.Message))
		case erTableDefChanged:
			return mk(ErrTableChanged, me.Message+": a table was altered (DDL) while the backup ran; run the backup again, away from schema changes")
		case erNotAllowedCommand, erLocalInfileDisabled, erClientLocalFiles:
			return mk(ErrLocalInfile, me.Message+": the server has local_infile=OFF")
		}
		if strings.Contains(me.Message, "No space left") || strings.Contains(me.Message, "errno: 28") {
			return mk(ErrDiskFull, diskFullMsg(me.Message))
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if msg, ok := tlsVerifyMsg(err); ok {
		return mk(ErrTLSVerify, msg)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return mk(ErrUnreachable, "unknown host "+dnsErr.Name+": check the host name in the DSN")
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return mk(ErrUnreachable, "cannot reach the server ("+opErr.Err.Error()+"): check the host and port in the DSN and that the server is running")
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &opErr) {
		return mk(ErrConnectionLost, lostMsg(err.Error()))
	}
	return fmt.Errorf("%s: %w", op, err)
}

func diskFullMsg(server string) string {
	return "the server ran out of space (" + server + "): free space in its data directory or tmpdir (or raise the table's size limit), then run again"
}

func lostMsg(cause string) string {
	return "lost the connection to the server (" + cause + "): it was probably restarted, killed or timed out; check its error log, then run again"
}
