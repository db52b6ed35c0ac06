// Package file stores objects as files under a local directory, making each
// put visible only once it is complete and durable.
package file
