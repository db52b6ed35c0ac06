// Package crypto derives key-encryption keys from passphrases (scrypt) and
// key files (HKDF), wraps and unwraps repository keys, and seals payloads
// with AES-256-GCM bound to their name.
//
// Format 2 repositories: each key slot wraps RepoKeys (a root key and the
// chunk-id key); the root key wraps the data keys (WrapDataKey, bound to
// their generation) and derives the authenticator key (AuthKey). Format 1
// repositories wrap MasterKeys (one data key and the chunk-id key) under
// their only key.
package crypto
