// Package policy turns policy documents into validated PolicySpec records
// and answers, as pure functions of the catalog's records and a time, what
// a policy selects and when its runs are due: the selector grammar, the
// schedules, the window, the spread and the deterministic run ids.
package policy
