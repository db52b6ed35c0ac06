package storage

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ReservedPrefix may not start a key segment. The file backend uses it for
// files being written; refusing it here too keeps every key portable between
// backends, so a repository can be copied from one to the other.
const ReservedPrefix = ".tmp-"

// CheckKey accepts the keys every backend accepts: '/'-separated,
// relative, without empty, "." or ".." segments.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("invalid object key: empty")
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("invalid object key %q: absolute (keys are relative to the repository)", key)
	}
	return checkSegments(key, strings.Split(key, "/"))
}

// CheckPrefix accepts "" and any prefix of a valid key.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("invalid list prefix %q: absolute (keys are relative to the repository)", prefix)
	}
	segs := strings.Split(prefix, "/")
	last := segs[len(segs)-1]
	if last != "." && last != ".." { // a partial last segment may be empty or any name start
		segs = segs[:len(segs)-1]
	}
	if err := checkSegments(prefix, segs); err != nil {
		return fmt.Errorf("invalid list prefix: %w", err)
	}
	return nil
}

func checkSegments(key string, segs []string) error {
	if !utf8.ValidString(key) || strings.ContainsRune(key, 0) {
		return fmt.Errorf("invalid object key %q: not valid UTF-8 or contains NUL", key)
	}
	for _, seg := range segs {
		switch {
		case seg == "":
			return fmt.Errorf("invalid object key %q: empty path segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("invalid object key %q: %q segment", key, seg)
		case strings.HasPrefix(seg, ReservedPrefix):
			return fmt.Errorf("invalid object key %q: segments starting with %q are reserved for temporary files", key, ReservedPrefix)
		}
	}
	return nil
}
