package crypto

import (
	"bytes"
	"errors"
	"testing"
)

func TestWrapUnwrap(t *testing.T) {
	p := DefaultScrypt()
	p.N = 1 << 10 // keep the test fast; the cost is what is recorded
	kek, err := DeriveKEK([]byte("correct horse"), p)
	if err != nil {
		t.Fatal(err)
	}
	mk := NewMasterKeys()
	w, err := mk.Wrap(kek)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(kek, w)
	if err != nil {
		t.Fatal(err)
	}
	if got.Data != mk.Data || got.ID != mk.ID {
		t.Fatal("unwrapped keys differ")
	}
	bad, _ := DeriveKEK([]byte("wrong horse"), p)
	if _, err := Unwrap(bad, w); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: got %v, want ErrWrongKey", err)
	}
}

func TestKeyFileTooShort(t *testing.T) {
	if _, err := DeriveKEK([]byte("short"), KeyFileKDF()); err == nil {
		t.Fatal("a 5-byte key file was accepted")
	}
	if _, err := DeriveKEK(bytes.Repeat([]byte{7}, 32), KDFParams{Name: "rot13"}); err == nil {
		t.Fatal("unknown kdf accepted")
	}
}

func TestSealBindsAD(t *testing.T) {
	s, err := NewSealer(Random(32))
	if err != nil {
		t.Fatal(err)
	}
	sealed := s.Seal(nil, []byte("payload"), []byte("chunk-a"))
	if out, err := s.Open(nil, sealed, []byte("chunk-a")); err != nil || string(out) != "payload" {
		t.Fatalf("open: %q %v", out, err)
	}
	if _, err := s.Open(nil, sealed, []byte("chunk-b")); !errors.Is(err, ErrAuth) {
		t.Fatalf("moved ciphertext opened: %v", err)
	}
	cp := append([]byte(nil), sealed...)
	if out, err := s.OpenInPlace(cp, []byte("chunk-a")); err != nil || string(out) != "payload" {
		t.Fatalf("open in place: %q %v", out, err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.OpenInPlace(append([]byte(nil), sealed...), []byte("chunk-a")); !errors.Is(err, ErrAuth) {
		t.Fatalf("flipped byte opened in place: %v", err)
	}
	if _, err := s.Open(nil, sealed, []byte("chunk-a")); !errors.Is(err, ErrAuth) {
		t.Fatalf("flipped byte opened: %v", err)
	}
	if _, err := s.Open(nil, []byte{1, 2}, nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("short input: %v", err)
	}
}

func TestRepoKeysWrap(t *testing.T) {
	kek := Random(32)
	k := NewRepoKeys()
	w, err := k.Wrap(kek)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapRepoKeys(kek, w)
	if err != nil || got.Root != k.Root || got.ID != k.ID {
		t.Fatalf("unwrap: %v", err)
	}
	if _, err := UnwrapRepoKeys(Random(32), w); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong kek: %v", err)
	}
	data := Random(32)
	wd, err := k.WrapDataKey(3, data)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := k.UnwrapDataKey(3, wd); err != nil || !bytes.Equal(d, data) {
		t.Fatalf("unwrap data key: %v", err)
	}
	if _, err := k.UnwrapDataKey(4, wd); !errors.Is(err, ErrAuth) {
		t.Fatalf("data key relabelled as another generation opened: %v", err)
	}
	if bytes.Equal(k.AuthKey(), k.Root[:]) || len(k.AuthKey()) != 32 {
		t.Fatal("auth key is not a distinct 32-byte key")
	}
}
