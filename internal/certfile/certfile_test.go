package certfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsproxy/wsproxy/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// pair returns a self-signed certificate with serial and its key, PEM.
func pair(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func serialOf(t *testing.T, c *tls.Certificate) int64 {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber.Int64()
}

// write writes b to path with a modification time of its own (a file system
// may keep coarse times).
func write(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// TestReload: a changed pair is loaded; a half-written change (new
// certificate, old key) keeps the previous certificate, reports why once,
// and is loaded when the key follows; nothing is read again while the files
// are unchanged or within the interval.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := pair(t, 1)
	c2, k2 := pair(t, 2)
	t0 := time.Now().Add(-time.Hour)
	write(t, certFile, c1, t0)
	write(t, keyFile, k1, t0)
	r, err := New(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r.interval = 0

	write(t, certFile, c2, t0.Add(time.Minute)) // the key is still k1
	cert, reloaded, err := r.Certificate()
	if err == nil || reloaded || serialOf(t, cert) != 1 {
		t.Fatalf("half-written renewal: serial %d, reloaded %v, err %v; want the old certificate and an error", serialOf(t, cert), reloaded, err)
	}
	if _, _, err := r.Certificate(); err != nil {
		t.Errorf("the same broken files reported again: %v", err)
	}
	write(t, keyFile, k2, t0.Add(time.Minute))
	cert, reloaded, err = r.Certificate()
	if err != nil || !reloaded || serialOf(t, cert) != 2 {
		t.Fatalf("completed renewal: serial %d, reloaded %v, err %v", serialOf(t, cert), reloaded, err)
	}
	if _, reloaded, _ := r.Certificate(); reloaded {
		t.Error("reloaded unchanged files")
	}

	// Within the interval the files are not looked at.
	r.interval = time.Hour
	write(t, certFile, c1, t0.Add(2*time.Minute))
	write(t, keyFile, k1, t0.Add(2*time.Minute))
	if cert, _, _ := r.Certificate(); serialOf(t, cert) != 2 {
		t.Error("files looked at again within the interval")
	}
	if _, err := New(certFile, filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("New with a missing key file succeeded")
	}
}
