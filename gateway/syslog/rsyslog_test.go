package syslog

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otgw/otgw/internal/testenv"
)

// testPKI is a throw-away PKI made in t.TempDir(): a CA, the receiver's
// certificate (soc-receiver.test, IP 127.0.0.1), our client certificate
// (gw-01.test) and a rogue CA with a client certificate of the same name.
type testPKI struct {
	dir                          string
	ca, serverCert, serverKey    string
	clientCert, clientKey        string
	rogueCA, rogueCert, rogueKey string
	caCert                       *x509.Certificate
	caKey                        *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *testPKI { return newPKIB(t) }

func newPKIB(t testing.TB) *testPKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir}
	caKey, caCert := mkCA(t, "Test Plant SOC CA")
	p.caCert, p.caKey = caCert, caKey
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	p.serverCert, p.serverKey = mkLeaf(t, dir, "soc-receiver.test", caCert, caKey, true)
	p.clientCert, p.clientKey = mkLeaf(t, dir, "gw-01.test", caCert, caKey, false)
	rKey, rCert := mkCA(t, "Rogue CA")
	p.rogueCA = writePEM(t, dir, "rogue-ca.pem", "CERTIFICATE", rCert.Raw)
	rd := filepath.Join(dir, "rogue")
	if err := os.MkdirAll(rd, 0o700); err != nil {
		t.Fatal(err)
	}
	p.rogueCert, p.rogueKey = mkLeaf(t, rd, "gw-01.test", rCert, rKey, false)
	return p
}

var serial int64 = 100

func mkCA(t testing.TB, cn string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return k, c
}

func mkLeaf(t testing.TB, dir, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool) (string, string) {
	t.Helper()
	return mkLeafValid(t, dir, cn, ca, caKey, server, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// mkLeafValid is mkLeaf with the validity period given.
func mkLeafValid(t testing.TB, dir, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool, notBefore, notAfter time.Time) (string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: []string{cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, cn+".pem", "CERTIFICATE", der), writePEM(t, dir, cn+".key", "EC PRIVATE KEY", kd)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// receiver is a private rsyslogd on 127.0.0.1 acting as the plant SOC:
// plain TCP (octet counting), TLS via GnuTLS and via OpenSSL with mutual
// authentication (client must chain to the CA and be named gw-01.test).
// Every message is written parsed (msgid, structured data as JSON) to
// out/received.log.
type receiver struct {
	*testenv.Rsyslogd
	t                 testing.TB
	plain, gtls, ossl int
}

const receiverConf = `global(workDirectory="@DIR@/work" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="@CA@"
  defaultNetstreamDriverCertFile="@CERT@"
  defaultNetstreamDriverKeyFile="@KEY@")
module(load="imtcp" maxSessions="64")
module(load="mmpstrucdata")
template(name="t_parsed" type="list") {
  constant(value="in=") property(name="inputname")
  constant(value=" pri=") property(name="pri")
  constant(value=" ver=") property(name="protocol-version")
  constant(value=" host=") property(name="hostname")
  constant(value=" app=") property(name="app-name")
  constant(value=" msgid=") property(name="msgid")
  constant(value=" sdjson=") property(name="$!rfc5424-sd")
  constant(value=" msg=") property(name="msg" droplastlf="on")
  constant(value="\n")
}
input(type="imtcp" name="tcp-plain" address="127.0.0.1" port="@PLAIN@" ruleset="soc" supportOctetCountedFraming="on")
input(type="imtcp" name="tls-gtls" address="127.0.0.1" port="@GTLS@" ruleset="soc"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/name" permittedPeer=["gw-01.test"])
input(type="imtcp" name="tls-ossl" address="127.0.0.1" port="@OSSL@" ruleset="soc"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="x509/name" permittedPeer=["gw-01.test"])
ruleset(name="soc") {
  action(type="mmpstrucdata" sd_name.lowercase="off")
  action(type="omfile" file="@DIR@/out/received.log" template="t_parsed")
}
`

// newReceiver writes the config; start runs it.
func newReceiver(t *testing.T, p *testPKI) *receiver { return newReceiverB(t, p) }

func newReceiverB(t testing.TB, p *testPKI) *receiver {
	t.Helper()
	r := &receiver{Rsyslogd: testenv.NewRsyslogd(t, "receiver.conf"), t: t, plain: testenv.FreeTCPPort(t), gtls: testenv.FreeTCPPort(t), ossl: testenv.FreeTCPPort(t)}
	conf := strings.NewReplacer("@DIR@", r.Dir, "@CA@", p.ca, "@CERT@", p.serverCert, "@KEY@", p.serverKey,
		"@PLAIN@", fmt.Sprint(r.plain), "@GTLS@", fmt.Sprint(r.gtls), "@OSSL@", fmt.Sprint(r.ossl)).Replace(receiverConf)
	if err := os.WriteFile(r.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func listening(port int) bool {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	return strings.Contains(string(b), fmt.Sprintf("0100007F:%04X 00000000:0000 0A", port))
}

func (r *receiver) start() {
	r.t.Helper()
	r.Start(func() bool { return listening(r.plain) && listening(r.gtls) && listening(r.ossl) })
}

// stop terminates rsyslogd (SIGTERM, so it writes what it accepted) by PID.
func (r *receiver) stop() { r.Stop() }

// lines returns the parsed messages received so far.
// lines returns the complete lines rsyslog has written so far: a last
// line without its newline is still being written and is left for the
// next call (reading it would see half a message).
func (r *receiver) lines() []string {
	b, err := os.ReadFile(filepath.Join(r.Dir, "out", "received.log"))
	if err != nil {
		return nil
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else {
		return nil
	}
	if len(b) == 0 {
		return []string{""}
	}
	return strings.Split(string(b), "\n")
}

func (r *receiver) diag() string { return r.Output() }

// waitLines waits until pred holds for the received lines.
func (r *receiver) waitLines(timeout time.Duration, pred func([]string) bool) []string {
	deadline := time.Now().Add(timeout)
	for {
		l := r.lines()
		if pred(l) || time.Now().After(deadline) {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
}
