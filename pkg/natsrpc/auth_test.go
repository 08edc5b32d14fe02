package natsrpc_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/buddytok/buddytok/pkg/natsrpc"
)

// startServer runs a NATS server with opts (on a free loopback port) for
// the test.
func startServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every way a service can authenticate to NATS works, and a connection
// without the server's credentials, or with a wrong or incomplete set, is
// refused.
func TestConnectAuth(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)

	userPass := startServer(t, &server.Options{Username: "edge", Password: "s3cret-password"})
	token := startServer(t, &server.Options{Authorization: "a-long-token-value"})
	nkey, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	nkeyPub, _ := nkey.PublicKey()
	nkeySeed, _ := nkey.Seed()
	nkeyServer := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}}})
	credsURL, creds := operatorServer(t)
	tlsURL, ca, cert, key := tlsServer(t)

	tests := []struct {
		name string
		url  string
		auth natsrpc.Auth
		ok   bool
	}{
		{"user and password", userPass, natsrpc.Auth{User: "edge", Password: "s3cret-password"}, true},
		{"no credentials", userPass, natsrpc.Auth{}, false},
		{"a wrong password", userPass, natsrpc.Auth{User: "edge", Password: "guess"}, false},
		{"a user without a password", userPass, natsrpc.Auth{User: "edge"}, false},
		{"token", token, natsrpc.Auth{Token: "a-long-token-value"}, true},
		{"a wrong token", token, natsrpc.Auth{Token: "nope"}, false},
		{"nkey seed file", nkeyServer, natsrpc.Auth{NKeySeedFile: write(t, "user.nk", nkeySeed)}, true},
		{"no nkey", nkeyServer, natsrpc.Auth{}, false},
		{"credentials file", credsURL, natsrpc.Auth{CredsFile: creds}, true},
		{"no credentials file", credsURL, natsrpc.Auth{}, false},
		{"two ways at once", userPass, natsrpc.Auth{User: "edge", Password: "s3cret-password", Token: "x"}, false},
		{"TLS with a client certificate", tlsURL, natsrpc.Auth{TLSCA: ca, TLSCert: cert, TLSKey: key}, true},
		{"TLS without the CA", tlsURL, natsrpc.Auth{TLSCert: cert, TLSKey: key}, false},
		{"TLS without a client certificate", tlsURL, natsrpc.Auth{TLSCA: ca}, false},
		{"a certificate without its key", tlsURL, natsrpc.Auth{TLSCA: ca, TLSCert: cert}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, err := natsrpc.Connect(tc.url, "test", log, tc.auth)
			if nc != nil {
				defer nc.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("Connect: %v, want ok=%t", err, tc.ok)
			}
		})
	}
}

// operatorServer runs a server in operator mode (decentralised JWT auth)
// and returns its URL and a credentials file of a user of its account.
func operatorServer(t *testing.T) (string, string) {
	t.Helper()
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	opJWT, err := opClaims.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opDecoded, err := jwt.DecodeOperatorClaims(opJWT)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accPub, accJWT); err != nil {
		t.Fatal(err)
	}
	url := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{opDecoded}, AccountResolver: resolver})
	return url, write(t, "user.creds", creds)
}

// tlsServer runs a server that requires TLS and a client certificate, and
// returns its URL and the files of its CA and of a client certificate.
func tlsServer(t *testing.T) (url, caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return pair, certPEM, keyPEM
	}
	serverPair, _, _ := issue(2, x509.ExtKeyUsageServerAuth)
	_, clientCert, clientKey := issue(3, x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	url = startServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{serverPair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}})
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return url, write(t, "ca.pem", caPEM), write(t, "client.pem", clientCert), write(t, "client-key.pem", clientKey)
}
