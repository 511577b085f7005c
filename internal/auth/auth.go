// Package auth decides who may join which group (SPEC section 9): it verifies
// the JSON Web Token a /ws handshake carries and checks that its subject and
// groups allow the id and group asked for.
//
// Keys come from files. The algorithms a Verifier accepts follow from its
// keys and nothing else: HS256/384/512 with HMAC secrets, RS and PS with an
// RSA public key, the ES variant of an ECDSA key's curve, EdDSA with an
// Ed25519 key. A token signed with any other algorithm, "none" included, is
// refused, and an HMAC token is never checked against a public key.
//
// Nothing here logs, and no error or refusal carries a token, a key or any
// other input: refusals have constant texts.
package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Leeway is the clock skew allowed for a token's nbf and iat. Its exp is
// held to exactly, at the handshake and for the connection's life, so that a
// token accepted is never one the proxy closes at once.
const Leeway = 5 * time.Second

// MinSecretBytes is the shortest HMAC secret accepted.
const MinSecretBytes = 32

// Options say where the keys are and what else a token must carry.
type Options struct {
	// SecretFiles hold HMAC secrets (surrounding white space is trimmed).
	// A token signed with any of them is accepted: during a change of
	// secret, list the new one and the previous one.
	SecretFiles []string
	// PublicKeyFile holds one PEM public key: RSA, ECDSA or Ed25519.
	PublicKeyFile string
	// Audience and Issuer, when not empty, must be the token's aud (one of
	// them) and iss.
	Audience, Issuer string
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	// Static after Load.
	secrets [][]byte
	public  any // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or nil
	methods []string
	parser  *jwt.Parser
}

// Load reads the key files and returns a Verifier. At least one key is needed.
// Errors name the file, never its content.
func Load(opts Options) (*Verifier, error) {
	v := &Verifier{}
	for _, f := range opts.SecretFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("jwt secret: %w", err)
		}
		b = bytes.TrimSpace(b)
		if len(b) < MinSecretBytes {
			return nil, fmt.Errorf("jwt secret file %s: the secret must be at least %d bytes (make one with: head -c 32 /dev/urandom | base64 > %s)", f, MinSecretBytes, f)
		}
		v.secrets = append(v.secrets, b)
	}
	if len(v.secrets) > 0 {
		v.methods = append(v.methods, "HS256", "HS384", "HS512")
	}
	if opts.PublicKeyFile != "" {
		key, methods, err := loadPublicKey(opts.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		v.public = key
		v.methods = append(v.methods, methods...)
	}
	if len(v.methods) == 0 {
		return nil, errors.New("--auth=jwt needs a key: --jwt-secret-file or --jwt-public-key-file")
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	}
	if opts.Audience != "" {
		popts = append(popts, jwt.WithAudience(opts.Audience))
	}
	if opts.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(opts.Issuer))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
}

// Methods are the algorithms the Verifier accepts.
func (v *Verifier) Methods() []string { return append([]string(nil), v.methods...) }

func loadPublicKey(file string) (any, []string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("jwt public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, nil, fmt.Errorf("jwt public key file %s: no PEM block found", file)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, nil, fmt.Errorf("jwt public key file %s: a PEM %q block is not a public key (want PUBLIC KEY)", file, block.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("jwt public key file %s: %w", file, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, nil, fmt.Errorf("jwt public key file %s: an RSA key must have at least 2048 bits", file)
		}
		return k, []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("jwt public key file %s: ECDSA curve must be P-256, P-384 or P-521", file)
	case ed25519.PublicKey:
		return k, []string{"EdDSA"}, nil
	}
	return nil, nil, fmt.Errorf("jwt public key file %s: key type %T is not RSA, ECDSA or Ed25519", file, key)
}

// keyFor gives the parser the keys for the token's algorithm: the secrets for
// HMAC, the public key for the others. The parser has already refused any
// algorithm not in v.methods.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		if len(v.secrets) == 0 {
			return nil, errNoKey
		}
		set := jwt.VerificationKeySet{}
		for _, s := range v.secrets {
			set.Keys = append(set.Keys, s)
		}
		return set, nil
	}
	if v.public == nil {
		return nil, errNoKey
	}
	return v.public, nil
}

var errNoKey = errors.New("no key for the token's algorithm")

// Claims are what a verified token says.
type Claims struct {
	jwt.RegisteredClaims
	// Groups the bearer may join: exact names, prefixes ending in "*", or
	// "*" for every group. A single string counts as a list of one.
	Groups jwt.ClaimStrings `json:"groups,omitempty"`
}

// Allows reports whether the claims allow group.
func (c *Claims) Allows(group string) bool { return Allowed(c.Groups, group) }

// Allowed reports whether any of patterns allows group. A pattern is an exact
// group name, a prefix followed by "*" (room-* allows room-1 and room-, not
// room or roomx), or "*" alone. A "*" anywhere but at the end is an ordinary
// character.
func Allowed(patterns []string, group string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(group, prefix) {
				return true
			}
		} else if p == group {
			return true
		}
	}
	return false
}

// Refusal is a refused handshake: the HTTP status, a constant message for
// the JSON body, and a metrics reason. A 401 is answered with
// WWW-Authenticate: Bearer (RFC 6750).
type Refusal struct {
	Status int
	Msg    string
	Reason string
}

func (r *Refusal) Error() string { return r.Msg }

// The refusals. Their texts are constant: they never carry input.
var (
	RefuseMissing = &Refusal{http.StatusUnauthorized,
		"missing token: send Authorization: Bearer <token>, the subprotocols wsproxy and wsproxy.bearer.<token>, or ?token=<token>",
		"auth_missing"}
	RefuseMalformed = &Refusal{http.StatusUnauthorized, "malformed token", "auth_malformed"}
	RefuseInvalid   = &Refusal{http.StatusUnauthorized, "invalid token", "auth_invalid"}
	RefuseExpired   = &Refusal{http.StatusUnauthorized, "token expired", "auth_expired"}
	RefuseNotYet    = &Refusal{http.StatusUnauthorized, "token not valid yet", "auth_invalid"}
	RefuseID        = &Refusal{http.StatusForbidden, "id does not match the token's subject", "auth_id"}
	RefuseGroup     = &Refusal{http.StatusForbidden, "group not allowed by the token", "auth_group"}
	// RefuseSubprotocol: a bearer subprotocol offered without "wsproxy",
	// which the proxy answers with (a browser fails a handshake whose
	// answer names none of the protocols it offered).
	RefuseSubprotocol = &Refusal{http.StatusBadRequest,
		"Sec-WebSocket-Protocol: offer wsproxy together with wsproxy.bearer.<token>", "bad_subprotocol"}
)

// Verify checks a token's signature and claims at time now. The refusal says
// why a token is refused; its reason is never the token.
func (v *Verifier) Verify(token string, now time.Time) (*Claims, *Refusal) {
	c := &Claims{}
	_, err := v.parser.ParseWithClaims(token, c, v.keyFor)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, RefuseMalformed
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, RefuseExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return nil, RefuseNotYet
	default:
		// Bad signature, an algorithm the keys do not allow, a missing
		// exp, the wrong audience or issuer.
		return nil, RefuseInvalid
	}
	// exp without leeway (see Leeway). (The parser requires exp; this
	// does not rely on it.)
	if c.ExpiresAt == nil {
		return nil, RefuseInvalid
	}
	if !now.Before(c.ExpiresAt.Time) {
		return nil, RefuseExpired
	}
	if c.Subject == "" {
		return nil, RefuseInvalid
	}
	return c, nil
}

// Grant is what a verified token allows a connection.
type Grant struct {
	// ID is the member id: the token's subject.
	ID string
	// Expires is the token's exp: the connection must end then.
	Expires time.Time
}

// Authorize checks the token a /ws handshake carries (see TokenFrom) against
// the id (empty: the request gave none, and the subject is the id) and group
// it asks for.
func (v *Verifier) Authorize(r *http.Request, id, group string) (Grant, *Refusal) {
	token, rej := TokenFrom(r)
	if rej != nil {
		return Grant{}, rej
	}
	c, rej := v.Verify(token, time.Now())
	if rej != nil {
		return Grant{}, rej
	}
	if id != "" && id != c.Subject {
		return Grant{ID: c.Subject}, RefuseID
	}
	if !c.Allows(group) {
		return Grant{ID: c.Subject}, RefuseGroup
	}
	return Grant{ID: c.Subject, Expires: c.ExpiresAt.Time}, nil
}
