package policy

import (
	"strings"
	"testing"
)

func TestSelector(t *testing.T) {
	labels := map[string]string{"env": "prod", "dc": "a", "role": "db"}
	for _, c := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"env=prod", true},
		{"env==prod", true},
		{"env=dev", false},
		{"env!=dev", true},
		{"env!=prod", false},
		{"missing!=x", true},
		{"dc in (a,b)", true},
		{"dc in (b, c)", false},
		{"dc notin (b,c)", true},
		{"dc notin (a)", false},
		{"missing notin (a)", true},
		{"missing in (a)", false},
		{"role", true},
		{"scratch", false},
		{"!scratch", true},
		{"!role", false},
		{"env=prod, dc in (a,b),role!=scratch", true},
		{"env=prod,dc in (a,b),!role", false},
	} {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Errorf("%q: %v", c.sel, err)
			continue
		}
		if got := s.Matches(labels); got != c.want {
			t.Errorf("%q matches %v = %v, want %v", c.sel, labels, got, c.want)
		}
	}
}

func TestSelectorErrors(t *testing.T) {
	for _, c := range []struct{ sel, want string }{
		{"env=", "column 5: expected a value, found the end"},
		{"env=prod,", "expected a label key, found the end"},
		{"dc in a,b", "expected '(' after \"in\""},
		{"dc in (a b)", "expected ',' or ')'"},
		{"dc like (a)", "unknown operator \"like\""},
		{"env=prod dc=a", "expected ',' between requirements"},
		{"=prod", "column 1: expected a label key, found \"=\""},
		{"dc in (a,", "expected a value, found the end"},
	} {
		_, err := ParseSelector(c.sel)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.sel, err, c.want)
		}
	}
}

func TestSelectorString(t *testing.T) {
	s, err := ParseSelector(" env = prod ,dc in ( b , a ),!x ,y")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "env=prod,dc in (a,b),!x,y" {
		t.Fatalf("canonical %q", got)
	}
}
