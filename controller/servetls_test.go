package controller

import (
	"errors"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestCheckServeTLS: a restore job's serve TLS settings are refused, as
// invalid (InvalidArgument at the API) naming the field, where they cannot apply; good ones
// pass.
func TestCheckServeTLS(t *testing.T) {
	stop := &v1.RestoreParams_StopAtGtidSet{StopAtGtidSet: "0-1-5"}
	for _, c := range []struct {
		p    *v1.RestoreParams
		want string // "" accepted
	}{
		{&v1.RestoreParams{StopAt: stop}, ""},
		{&v1.RestoreParams{StopAt: stop, ServeTls: v1.ServeTLS_SERVE_TLS_ON, ServeTlsCertFile: "/c.pem", ServeTlsKeyFile: "/k.pem", ServeTlsCaFile: "/ca.pem"}, ""},
		{&v1.RestoreParams{ServeTls: v1.ServeTLS_SERVE_TLS_ON}, "point-in-time restore only"},
		{&v1.RestoreParams{StopAt: stop, ServeTlsCertFile: "/c.pem"}, "go together"},
		{&v1.RestoreParams{StopAt: stop, ServeTlsCaFile: "/ca.pem"}, "give the certificate and key too"},
		{&v1.RestoreParams{StopAt: stop, ServeTls: v1.ServeTLS_SERVE_TLS_OFF, ServeTlsCertFile: "/c.pem", ServeTlsKeyFile: "/k.pem"}, "is off"},
		{&v1.RestoreParams{StopAt: stop, ServeTlsCertFile: "c.pem", ServeTlsKeyFile: "/k.pem"}, `serve_tls_cert_file "c.pem": an absolute path`},
	} {
		err := checkServeTLS(c.p)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v: %v", c.p, err)
		case c.want != "" && (!errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: %v, want InvalidArgument saying %q", c.p, err, c.want)
		}
	}
}
