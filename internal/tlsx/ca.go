package tlsx

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// ControllerServerName is the DNS name every controller certificate
// carries and every client checks: controllers are dialled by address, and
// an address says nothing about who answers, so the check is "a controller
// of this CA", and the identity in the certificate tells which.
const ControllerServerName = "controller.tidemark.internal"

// AgentServerName is the DNS name every agent certificate the cluster CA
// issues carries, for a Prometheus scraping an agent's --metrics-addr over
// HTTPS (tls_config server_name). Agent certificates issued before it was
// added lack it until their next renewal.
const AgentServerName = "agent.tidemark.internal"

// CA is a certificate authority: the cluster's own or one an operator
// supplied.
type CA struct {
	Cert *x509.Certificate
	// Key is nil for a CA whose key is not held here (operator-supplied
	// certificates): it can verify, not issue.
	Key crypto.Signer
}

// NewCA creates a CA (ECDSA P-256) named name, valid from now for
// validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Tidemark"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool is a pool holding the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueParams describe a certificate to issue.
type IssueParams struct {
	Identity Identity
	// PublicKey is the holder's key (from its CSR); the holder keeps the
	// private key.
	PublicKey crypto.PublicKey
	// Validity is how long the certificate lives from now (at most the
	// CA's own remaining life).
	Validity time.Duration
}

// Issue signs a certificate for p.Identity, usable both as a TLS client and
// server (controllers are both; agents and users only dial). It returns the
// certificate in PEM.
func (ca *CA) Issue(p IssueParams) ([]byte, error) {
	if ca.Key == nil {
		return nil, errors.New("this CA's key is not held here: certificates come from the operator's own CA")
	}
	if err := p.Identity.Validate(); err != nil {
		return nil, err
	}
	if p.Validity <= 0 {
		return nil, fmt.Errorf("certificate validity %s must be positive", p.Validity)
	}
	now := time.Now()
	notAfter := now.Add(p.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: p.Identity.Name, OrganizationalUnit: []string{string(p.Identity.Kind)}, Organization: []string{"Tidemark"}},
		// A little back-dating absorbs small clock differences between
		// the issuer and the peers that check it.
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{p.Identity.URI()},
	}
	switch p.Identity.Kind {
	case KindController:
		tmpl.DNSNames = []string{ControllerServerName}
	case KindAgent:
		// The agent's metrics listener serves HTTPS with this
		// certificate; a scraper verifies it under this name.
		tmpl.DNSNames = []string{AgentServerName}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, p.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate for %s: %w", p.Identity, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// IssueKeyPair creates a key pair and a certificate for id: for credentials
// made where the CA is (a bootstrap's admin credential, tests). It returns
// the certificate and the private key in PEM.
func (ca *CA) IssueKeyPair(id Identity, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err = ca.Issue(IssueParams{Identity: id, PublicKey: key.Public(), Validity: validity})
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(key)
	return certPEM, keyPEM, err
}

// KeyPEM encodes a private key (PKCS #8).
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCA reads a CA certificate (PEM) and, when keyPEM is not nil, its key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	ca := &CA{Cert: cert}
	if keyPEM != nil {
		key, err := parseKeyPEM(keyPEM)
		if err != nil {
			return nil, err
		}
		if !publicKeysEqual(key.Public(), cert.PublicKey) {
			return nil, fmt.Errorf("the CA key does not belong to CA certificate %q", cert.Subject.CommonName)
		}
		ca.Key = key
	}
	return ca, nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM private key block")
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// sealedMagic starts a sealed CA key, so a wrong file is told from a wrong
// key.
const sealedMagic = "tidemark-sealed-ca-key-v1\n"

// MinKeyFileSize is the least a --ca-key-file holds (random bytes).
const MinKeyFileSize = 32

// Seal encrypts a private key (PEM) under keyFile's contents
// (AES-256-GCM, key derived with HKDF-SHA256), for storage where others
// can read it.
func Seal(keyPEM, keyFile []byte) ([]byte, error) {
	aead, err := sealAEAD(keyFile)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte(sealedMagic), nonce...)
	return aead.Seal(out, nonce, keyPEM, []byte(sealedMagic)), nil
}

// ErrWrongKeyFile: the key file does not open the sealed key.
var ErrWrongKeyFile = errors.New("the CA key file does not open the cluster's CA key (a different file from the one the cluster was bootstrapped with?)")

// Unseal reverses Seal.
func Unseal(sealed, keyFile []byte) ([]byte, error) {
	aead, err := sealAEAD(keyFile)
	if err != nil {
		return nil, err
	}
	if len(sealed) < len(sealedMagic)+aead.NonceSize() || string(sealed[:len(sealedMagic)]) != sealedMagic {
		return nil, errors.New("the sealed CA key is damaged (no header)")
	}
	rest := sealed[len(sealedMagic):]
	pt, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(sealedMagic))
	if err != nil {
		return nil, ErrWrongKeyFile
	}
	return pt, nil
}

func sealAEAD(keyFile []byte) (cipher.AEAD, error) {
	if len(keyFile) < MinKeyFileSize {
		return nil, fmt.Errorf("the CA key file holds %d bytes; it needs at least %d random bytes (e.g. head -c 32 /dev/urandom > FILE)", len(keyFile), MinKeyFileSize)
	}
	k, err := hkdf.Key(sha256.New, keyFile, nil, "tidemark cluster CA key", 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// NewCSR makes a key pair and a certificate signing request for id: the
// private key (PEM) stays with the caller, the request (DER) goes to the
// cluster.
func NewCSR(id Identity) (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.Name}, URIs: []*url.URL{id.URI()},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(key)
	return keyPEM, csrDER, err
}

// SignCSR issues a certificate for id over the key of a signing request
// (DER) whose signature it checks. The identity is the caller's decision,
// not the request's: what the request asks for is ignored.
func (ca *CA) SignCSR(csrDER []byte, id Identity, validity time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate signing request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate signing request: %w", err)
	}
	return ca.Issue(IssueParams{Identity: id, PublicKey: csr.PublicKey, Validity: validity})
}
