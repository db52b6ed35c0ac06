// Package crypto derives, wraps and unwraps repository keys and seals chunk
// payloads with AES-256-GCM bound to their chunk id.
package crypto
