package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	gopcua "github.com/gopcua/opcua"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/otgw/otgw/internal/testenv"
	"github.com/otgw/otgw/protocols"
)

// selfSigned returns an RSA key and a self-signed certificate for an OPC
// UA application (its ApplicationUri in the SubjectAltName).
func selfSigned(t *testing.T, uri string) (*rsa.PrivateKey, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "otgw test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment |
			x509.KeyUsageContentCommitment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{u},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// relay accepts connections on a loopback port, forwards them to target
// and feeds both directions of each to its own Session.
type relay struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []*Session
	recs  [][]protocols.Record
	wg    sync.WaitGroup
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			i := len(r.conns)
			r.conns = append(r.conns, newSession())
			r.recs = append(r.recs, nil)
			r.mu.Unlock()
			r.wg.Add(2)
			go r.pipe(i, protocols.Request, c, s)
			go r.pipe(i, protocols.Response, s, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *relay) pipe(i int, dir protocols.Dir, from, to net.Conn) {
	defer r.wg.Done()
	defer to.Close()
	defer from.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			r.mu.Lock()
			feed(r.conns[i], dir, buf[:n], false, func(rec protocols.Record) { r.recs[i] = append(r.recs[i], rec) })
			r.mu.Unlock()
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF or a closed connection
		}
	}
}

// TestLiveSecureChannels runs a gopcua client against a gopcua server on
// loopback under Basic256Sha256, in mode Sign and in SignAndEncrypt,
// through a relay that feeds the traffic to a Session: the Channel infers
// the mode each client asked for in its encrypted OPN, with no anomaly,
// reading the bodies of the Sign channel and none of the other's.
func TestLiveSecureChannels(t *testing.T) {
	for _, mode := range []ua.MessageSecurityMode{ua.MessageSecurityModeSign, ua.MessageSecurityModeSignAndEncrypt} {
		t.Run(mode.String(), func(t *testing.T) {
			skey, scert := selfSigned(t, "urn:otgw:test:server")
			ckey, ccert := selfSigned(t, "urn:otgw:test:client")
			port := testenv.FreeTCPPort(t)
			rl := newRelay(t, "127.0.0.1:"+strconv.Itoa(port))
			srv := server.New(
				server.EnableSecurity("Basic256Sha256", mode),
				server.EnableAuthMode(ua.UserTokenTypeAnonymous),
				// The first endpoint is the listen address, the second
				// the URL clients use (the relay).
				server.EndPoint("127.0.0.1", port),
				server.EndPoint("127.0.0.1", rl.ln.Addr().(*net.TCPAddr).Port),
				server.PrivateKey(skey),
				server.Certificate(scert),
			)
			ns := server.NewMapNamespace(srv, "urn:otgw:test")
			ns.Data["Line1.Setpoint"] = 42.5
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := srv.Start(ctx); err != nil {
				t.Fatalf("server: %v", err)
			}
			defer srv.Close()
			endpoint := "opc.tcp://" + rl.ln.Addr().String()
			eps, err := gopcua.GetEndpoints(ctx, endpoint)
			if err != nil {
				t.Fatalf("GetEndpoints: %v", err)
			}
			var ep *ua.EndpointDescription
			for _, e := range eps {
				if e.SecurityMode == mode && e.SecurityPolicyURI == PolicyBasic256Sha256.URI() {
					ep = e
				}
			}
			if ep == nil {
				t.Fatalf("no Basic256Sha256 %v endpoint among %d", mode, len(eps))
			}
			c, err := gopcua.NewClient(endpoint,
				gopcua.SecurityFromEndpoint(ep, ua.UserTokenTypeAnonymous),
				gopcua.PrivateKey(ckey), gopcua.Certificate(ccert),
				gopcua.ApplicationURI("urn:otgw:test:client"),
				gopcua.AutoReconnect(false), gopcua.RequestTimeout(5*time.Second), gopcua.DialTimeout(5*time.Second))
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			if err := c.Connect(ctx); err != nil {
				t.Fatalf("connect: %v", err)
			}
			node := ua.NewStringNodeID(ns.ID(), "Line1.Setpoint")
			for i := range 5 {
				if _, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: node, AttributeID: ua.AttributeIDValue}}}); err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
			}
			if _, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{NodeID: node, AttributeID: ua.AttributeIDValue,
				Value: &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(7.5)}}}}); err != nil {
				t.Fatalf("write: %v", err)
			}
			_ = c.Close(ctx)
			time.Sleep(100 * time.Millisecond) // let the relay see the last bytes
			rl.mu.Lock()
			defer rl.mu.Unlock()
			secure := 0
			for i, conn := range rl.conns {
				for _, rec := range rl.recs[i] {
					if rec.Anomaly != "" {
						t.Errorf("connection %d: anomaly %s in %v", i, rec.Anomaly, rec.Fields)
					}
				}
				if conn.Channel.Policy() != PolicyBasic256Sha256 {
					continue
				}
				secure++
				got, inferred := conn.Channel.Mode()
				if got != SecurityMode(mode) || !inferred {
					t.Errorf("connection %d: mode %v inferred %v, want %v inferred", i, got, inferred, mode)
				}
				services := 0
				for _, rec := range rl.recs[i] {
					for _, kv := range rec.Fields {
						if kv.Key == "service" {
							services++
						}
					}
				}
				if sign := mode == ua.MessageSecurityModeSign; (services > 0) != sign {
					t.Errorf("connection %d: %d bodies read in mode %v", i, services, mode)
				}
				t.Logf("connection %d: %d records, %d bodies read", i, len(rl.recs[i]), services)
			}
			if secure != 1 {
				t.Errorf("%d Basic256Sha256 connections, want 1", secure)
			}
		})
	}
}
