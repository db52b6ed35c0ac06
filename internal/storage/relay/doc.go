// Package relay stores objects through a controller's RelayService over
// gRPC, so that an agent writes to the controller's own repository.
package relay
