package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of everything the control plane needs, all inside one directory.
// Everything is generated once and reused when the data directory is reused.
type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) CACert() string             { return p.path("ca.crt") }
func (p pki) CAKey() string              { return p.path("ca.key") }
func (p pki) ServingCert() string        { return p.path("apiserver.crt") }
func (p pki) ServingKey() string         { return p.path("apiserver.key") }
func (p pki) SAKey() string              { return p.path("sa.key") }
func (p pki) SAPub() string              { return p.path("sa.pub") }
func (p pki) TokenFile() string          { return p.path("tokens.csv") }
func (p pki) AdminToken() string         { return p.path("admin.token") }
func (p pki) clientCert(n string) string { return p.path(n + ".crt") }
func (p pki) clientKey(n string) string  { return p.path(n + ".key") }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func writeECKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func readCA(p pki) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(p.CACert())
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(p.CAKey())
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("bad CA PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// issue signs a leaf certificate with the CA and writes NAME.crt / NAME.key.
func issue(p pki, name string, tmpl *x509.Certificate) error {
	if exists(p.clientCert(name)) && exists(p.clientKey(name)) {
		return nil
	}
	caCert, caKey, err := readCA(p)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(10 * 365 * 24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeECKey(p.clientKey(name), key); err != nil {
		return err
	}
	return writePEM(p.clientCert(name), "CERTIFICATE", der, 0o644)
}

func issueClient(p pki, name, cn string, orgs ...string) error {
	return issue(p, name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ensurePKI creates the CA, the API server's serving certificate, the service-account
// signing key, client certificates for the admin and the controller-manager, and a
// static admin bearer token.
func ensurePKI(p pki, addr net.IP) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	if !exists(p.CACert()) || !exists(p.CAKey()) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "mimeo-e2e-ca"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			return err
		}
		if err := writeECKey(p.CAKey(), key); err != nil {
			return err
		}
		if err := writePEM(p.CACert(), "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
	}
	if err := issue(p, "apiserver", &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(serviceIP), addr},
	}); err != nil {
		return fmt.Errorf("serving cert: %w", err)
	}
	if err := issueClient(p, "admin", "mimeo-e2e-admin", "system:masters"); err != nil {
		return err
	}
	if err := issueClient(p, "controller-manager", "system:kube-controller-manager"); err != nil {
		return err
	}
	if err := issueClient(p, "scheduler", "system:kube-scheduler"); err != nil {
		return err
	}
	if err := issueClient(p, "kube-proxy", "system:kube-proxy"); err != nil {
		return err
	}
	if err := issueClient(p, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return err
	}
	if !exists(p.SAKey()) || !exists(p.SAPub()) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		if err := writePEM(p.SAKey(), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
			return err
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return err
		}
		if err := writePEM(p.SAPub(), "PUBLIC KEY", pub, 0o644); err != nil {
			return err
		}
	}
	if !exists(p.TokenFile()) || !exists(p.AdminToken()) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		tok := hex.EncodeToString(b)
		if err := os.WriteFile(p.AdminToken(), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
		// token,user,uid,"group1,group2"
		line := fmt.Sprintf("%s,mimeo-e2e-admin-token,mimeo-e2e-admin-token,\"system:masters\"\n", tok)
		if err := os.WriteFile(p.TokenFile(), []byte(line), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func b64file(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// writeKubeconfig writes a kubeconfig for a client certificate issued by ensurePKI,
// with every file embedded so the kubeconfig can be copied anywhere.
func writeKubeconfig(p pki, path, server, user string) error {
	ca, err := b64file(p.CACert())
	if err != nil {
		return err
	}
	crt, err := b64file(p.clientCert(user))
	if err != nil {
		return err
	}
	key, err := b64file(p.clientKey(user))
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: mimeo-e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: mimeo-e2e
  context:
    cluster: mimeo-e2e
    user: %s
    namespace: default
current-context: mimeo-e2e
`, server, ca, user, crt, key, user)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
