package probe

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// SQL adapts a database pool to Querier.
func SQL(db *sql.DB) Querier { return sqlQuerier{db} }

type sqlQuerier struct{ db *sql.DB }

func (q sqlQuerier) Query(ctx context.Context, query string) (out []Row, err error) {
	rows, err := q.db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := rows.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		r := make(Row, len(cols))
		for i, c := range cols {
			if vals[i].Valid {
				r[strings.ToLower(c)] = vals[i].String
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// LocalHost is the machine the agent runs on.
type LocalHost struct{}

var _ Host = LocalHost{}

// ReadFile implements Host.
func (LocalHost) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

// Run implements Host. The C locale keeps the output parseable.
func (LocalHost) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return stdout.Bytes(), nil
}
