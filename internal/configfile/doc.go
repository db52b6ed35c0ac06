// Package configfile reads a daemon's YAML (or JSON) config file into its
// top-level keys, each with the line it is on, so that every mistake in it
// can be named by line and key.
package configfile
