// Package humanize prints quantities for people: the CLI's summaries and
// the engines' error messages use one form.
package humanize
