package logical

import (
	"regexp"
	"strings"
)

// splitSecondaryIndexes removes plain secondary indexes (KEY ...) from a
// SHOW CREATE TABLE statement and returns them as ALTER TABLE clauses, so
// restore builds each index once, sorted, after the data instead of
// updating it row by row. Kept in the CREATE: the primary key (InnoDB's
// clustered order), UNIQUE keys (they guard the data as it loads),
// FULLTEXT and SPATIAL keys (adding the first FULLTEXT key later rebuilds
// the table), and a KEY whose first column is AUTO_INCREMENT (the server
// requires one). keepAll keeps every index: tables with foreign keys, either
// side, because the server would otherwise invent indexes for them.
func splitSecondaryIndexes(create string, keepAll bool) (string, []string) {
	if keepAll {
		return create, nil
	}
	lines := strings.Split(create, "\n")
	if len(lines) < 3 {
		return create, nil
	}
	end := -1
	for i := 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], ")") {
			end = i
			break
		}
	}
	if end < 0 {
		return create, nil
	}
	var autoCol string
	for _, l := range lines[1:end] {
		if m := columnLine.FindStringSubmatch(l); m != nil && strings.Contains(l, " AUTO_INCREMENT") {
			autoCol = m[1]
		}
	}
	var body, adds []string
	for _, l := range lines[1:end] {
		def := strings.TrimSuffix(strings.TrimSpace(l), ",")
		if strings.HasPrefix(def, "KEY ") && (autoCol == "" || !strings.Contains(def, "(`"+autoCol+"`")) {
			adds = append(adds, "ADD "+def)
			continue
		}
		body = append(body, "  "+def)
	}
	if len(adds) == 0 {
		return create, nil
	}
	out := lines[0] + "\n" + strings.Join(body, ",\n") + "\n" + strings.Join(lines[end:], "\n")
	return out, adds
}

// columnLine matches a column definition line and captures the name.
var columnLine = regexp.MustCompile("^  `((?:[^`]|``)+)` ")

// hasForeignKeys reports whether a CREATE TABLE declares a foreign key.
func hasForeignKeys(create string) bool { return strings.Contains(create, " FOREIGN KEY ") }

// referencedTables returns the tables a CREATE TABLE's foreign keys point at,
// as written: "`t`" or "`db`.`t`".
func referencedTables(create string) []string {
	var out []string
	for _, m := range referencesRe.FindAllStringSubmatch(create, -1) {
		out = append(out, m[1])
	}
	return out
}

var referencesRe = regexp.MustCompile("REFERENCES ((?:`(?:[^`]|``)+`\\.)?`(?:[^`]|``)+`)")

// renameQualified rewrites `old`. into `new`. for every renamed database.
// It is textual: it reaches the db-qualified names the server writes into
// view bodies and foreign keys, and any backquoted qualified name in a
// routine or trigger body, but not unquoted ones (old.t) nor names built in
// dynamic SQL. Unqualified names follow the object into its new database.
func renameQualified(sql string, rename map[string]string) string {
	for from, to := range rename {
		if from == to {
			continue
		}
		sql = strings.ReplaceAll(sql, qi(from)+".", qi(to)+".")
	}
	return sql
}

// namesUnquoted reports whether sql names database db unquoted as a
// qualifier (db.t, db . t): renameQualified leaves those alone, because an
// unquoted word may as well be a table alias of the same name.
func namesUnquoted(sql, db string) bool {
	re, err := regexp.Compile("(?:^|[^0-9A-Za-z_$\\x{80}-\\x{10FFFF}.`])" + regexp.QuoteMeta(db) + "\\s*\\.")
	return err == nil && re.MatchString(sql)
}

// triggerHeader matches the start of a trigger's original statement up to
// its table: the name and table may be written qualified, unquoted, by
// whoever created it.
var triggerHeader = regexp.MustCompile("(?is)^(CREATE\\s.*?\\bTRIGGER\\s+(?:IF\\s+NOT\\s+EXISTS\\s+)?)" + ident + "(?:\\s*\\.\\s*" + ident + ")?" +
	"(\\s+(?:BEFORE|AFTER)\\s+(?:INSERT|UPDATE|DELETE)\\s+ON\\s+)" + ident + "(?:\\s*\\.\\s*" + ident + ")?")

const ident = "(?:`(?:[^`]|``)+`|[^\\s.`(]+)"

// unqualifyTrigger rewrites a trigger's name and table to plain quoted
// names, so it is created in the session's current database, whatever it
// is called now.
func unqualifyTrigger(create, name, table string) string {
	loc := triggerHeader.FindStringSubmatchIndex(create)
	if loc == nil {
		return create
	}
	return create[:loc[3]] + qi(name) + create[loc[4]:loc[5]] + qi(table) + create[loc[1]:]
}
