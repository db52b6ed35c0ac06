package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tidemark-backup/tidemark/internal/configfile"
)

// controllerEnv is the environment variable of a controller flag:
// TIDEMARK_ and the flag's name in upper case with _ for -
// (--raft-election-timeout: TIDEMARK_RAFT_ELECTION_TIMEOUT). The global
// credential flags keep their own (TIDEMARK_CREDENTIALS, TIDEMARK_TLS_CA,
// ...), which they read themselves.
func controllerEnv(flag string) string {
	switch flag {
	case "credentials":
		return envCredentials
	case "tls-ca":
		return envTLSCA
	case "tls-cert":
		return envTLSCert
	case "tls-key":
		return envTLSKey
	case "insecure":
		return envInsecure
	}
	return "TIDEMARK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// notInFile are the controller's flags that a config file cannot set.
var notInFile = []string{"config", "help"}

// configKey is a flag's key in the config file: its name with _ for -.
func configKey(flag string) string { return strings.ReplaceAll(flag, "-", "_") }

// applyControllerConfig fills the controller's flags from, in rising
// precedence, the config file (path, if any) and the environment; a flag
// given on the command line is left alone. Every flag of the command (and
// the global credential flags) is a key of the file. Each mistake is named
// by line and key, or by variable.
func applyControllerConfig(cmd *cobra.Command, path string) error {
	fs := cmd.Flags()
	given := func(f *pflag.Flag) bool {
		if f.Changed {
			return true
		}
		// The credential flags took their environment as their default.
		return cmd.InheritedFlags().Lookup(f.Name) != nil && os.Getenv(controllerEnv(f.Name)) != ""
	}
	var errs []error
	if path != "" {
		entries, err := configfile.Read(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			name := strings.ReplaceAll(e.Key, "_", "-")
			f := fs.Lookup(name)
			if f == nil || slices.Contains(notInFile, name) || strings.Contains(e.Key, "-") {
				errs = append(errs, &configfile.Error{Path: path, Line: e.Line, Msg: fmt.Sprintf("unknown key %q (the keys are the controller's flags with _ for -: %s)", e.Key, strings.Join(controllerKeys(fs), ", "))})
				continue
			}
			if e.Map != nil {
				errs = append(errs, &configfile.Error{Path: path, Line: e.Line, Key: e.Key, Msg: "expected one value, got " + e.Kind()})
				continue
			}
			if given(f) || len(e.Values) == 0 {
				continue
			}
			v := e.Values[0]
			switch {
			case e.List && name == "join":
				v = strings.Join(e.Values, ",")
			case e.List:
				errs = append(errs, &configfile.Error{Path: path, Line: e.Line, Key: e.Key, Msg: "expected one value, got a list"})
				continue
			}
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, &configfile.Error{Path: path, Line: e.Line, Key: e.Key, Msg: fmt.Sprintf("%q: expected %s", v, valueKind(f))})
			}
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || cmd.InheritedFlags().Lookup(f.Name) != nil || slices.Contains(notInFile, f.Name) {
			return
		}
		env := controllerEnv(f.Name)
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: expected %s (it sets --%s)", env, v, valueKind(f), f.Name))
		}
	})
	return errors.Join(errs...)
}

// controllerKeys lists the config file's keys.
func controllerKeys(fs *pflag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notInFile, f.Name) {
			keys = append(keys, configKey(f.Name))
		}
	})
	slices.Sort(keys)
	return keys
}

// valueKind says what a flag's value must look like.
func valueKind(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "duration":
		return "a duration such as 500ms, 5s or 1m"
	case "bool":
		return "true or false"
	case "int", "int32", "int64", "uint", "uint32", "uint64":
		return "a whole number"
	}
	return "a " + f.Value.Type()
}
