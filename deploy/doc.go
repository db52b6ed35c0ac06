// Package deploy holds the files an operator deploys Tidemark with (systemd
// units, example configs, Kubernetes manifests, the local fleet script); it
// has no code, only tests that check those files against the binary.
package deploy
