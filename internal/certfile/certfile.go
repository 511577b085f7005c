// Package certfile serves a TLS certificate from files that may change
// while the process runs: a renewed certificate written over the old one is
// used for new connections without a restart.
package certfile

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// CheckInterval is how often, at most, the files are looked at again.
const CheckInterval = 2 * time.Second

// Reloader holds the certificate of a certificate file and a key file. Its
// methods are safe for concurrent use.
type Reloader struct {
	// Static after New.
	certFile, keyFile string
	interval          time.Duration // CheckInterval, but in tests

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   stamp     // of the files the certificate was loaded from
	checked time.Time // when the files were last looked at
	failed  stamp     // files that failed to load, not tried again while unchanged
}

// stamp is what tells a changed file: size and modification time of both.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// New loads the certificate and its key (PEM). It fails if they do not load.
func New(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, interval: CheckInterval}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	r.cert, r.stamp, r.checked = &cert, st, time.Now()
	return r, nil
}

func (r *Reloader) stat() (stamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return stamp{}, fmt.Errorf("tls: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return stamp{}, fmt.Errorf("tls: %w", err)
	}
	return stamp{c.ModTime(), k.ModTime(), c.Size(), k.Size()}, nil
}

// Certificate returns the current certificate, first loading the files again
// if CheckInterval has passed since they were last looked at and they have
// changed. A change that does not load (such as a certificate written before
// its key) keeps the previous certificate; err says why, and the same files
// are not tried again until they change again.
func (r *Reloader) Certificate() (cert *tls.Certificate, reloaded bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < r.interval {
		return r.cert, false, nil
	}
	r.checked = time.Now()
	st, err := r.stat()
	if err != nil || st == r.stamp || st == r.failed {
		return r.cert, false, err
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = st
		return r.cert, false, fmt.Errorf("tls: %w", err)
	}
	r.cert, r.stamp = &c, st
	return r.cert, true, nil
}

// Config returns a server TLS configuration (TLS 1.2 or later) that takes
// its certificate from r. onReload, if not nil, is told of every reload
// and every failed one (then err is not nil).
func (r *Reloader) Config(onReload func(err error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, reloaded, err := r.Certificate()
			if onReload != nil && (reloaded || err != nil) {
				onReload(err)
			}
			return cert, nil
		},
	}
}
