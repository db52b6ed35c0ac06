// Package yamlx decodes operator-written YAML strictly: unknown keys and
// wrong types are errors that name the line and the key, one document or
// a stream of several separated by `---`.
package yamlx
