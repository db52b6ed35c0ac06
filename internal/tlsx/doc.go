// Package tlsx is Tidemark's mutual TLS: the cluster CA, certificates that
// carry who holds them (a controller node, an agent or a CLI user with a
// role), tls.Configs that check both ends against one CA, certificate
// sources that renew or reload without dropping connections, and the Raft
// transport's TLS stream layer.
package tlsx
