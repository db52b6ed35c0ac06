package archive

// The zstd implementations a build can compress with (ZstdInfo.Name).
const (
	// ZstdLibzstd is libzstd through cgo: the default of a build with a
	// C compiler.
	ZstdLibzstd = "libzstd"
	// ZstdPureGo is klauspost/compress: what CGO_ENABLED=0 builds get.
	// It writes the same format, at about half libzstd's speed per core
	// on dump text, and compression bounds a backup's throughput.
	ZstdPureGo = "pure-go"
)

// ZstdInfo describes the zstd implementation built in, for `tidemark
// version`: a CGO_ENABLED=0 build works but silently compresses at half the
// speed, and this is how an operator finds out which one they run.
type ZstdInfo struct {
	// Name is ZstdLibzstd or ZstdPureGo.
	Name string
	// Module is the Go module that provides it (its version is in the
	// binary's build info).
	Module string
}
