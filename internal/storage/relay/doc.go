// Package relay stores objects through a controller's RelayService over
// gRPC (mutual TLS with the agent's certificate, or an explicit
// plaintext), so that an agent writes to the controller's own repository.
package relay
