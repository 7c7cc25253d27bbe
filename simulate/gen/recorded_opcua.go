package gen

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"
)

// libGopcua is the OPC UA library of the recorded traffic, as in go.mod.
const libGopcua = "github.com/gopcua/opcua v0.9.1"

// The address space of the recorded server (a gopcua MapNamespace).
const (
	uaTemp     = "Line1.Temp"
	uaSetpoint = "Line1.Setpoint"
)

// uaServer is a gopcua server on 127.0.0.1: SecurityPolicy None,
// anonymous users, one map namespace with two tags.
type uaServer struct {
	s      *server.Server
	cancel context.CancelFunc
	addr   string
	ns     uint16
}

func startUAServer() (*uaServer, error) {
	var err error
	for range 3 { // the port may be taken between freePort and Start
		var port int
		if port, err = freePort(); err != nil {
			continue
		}
		s := server.New(
			server.EnableSecurity("None", ua.MessageSecurityModeNone),
			server.EnableAuthMode(ua.UserTokenTypeAnonymous),
			server.EndPoint("127.0.0.1", port),
		)
		ns := server.NewMapNamespace(s, "urn:otgw:line1")
		ns.Data[uaTemp] = 21.5
		ns.Data[uaSetpoint] = 42.5
		ctx, cancel := context.WithCancel(context.Background())
		if err = s.Start(ctx); err == nil {
			return &uaServer{s: s, cancel: cancel, addr: fmt.Sprintf("127.0.0.1:%d", port), ns: uint16(ns.ID())}, nil
		}
		cancel()
	}
	return nil, fmt.Errorf("gen: opcua server: %w", err)
}

func (u *uaServer) stop() {
	_ = u.s.Close()
	u.cancel()
}

// uaCall is one call of the gopcua client (one step of a recording).
type uaCall func(ctx context.Context, c *opcua.Client) error

// record connects a gopcua client (SecurityPolicy and mode None) to u
// through a recording proxy (step 0: the whole Connect: HEL/ACK, OPN,
// CreateSession, ActivateSession and the client's namespace read), then
// runs calls, one step each. A service fault is an answer; a transport
// error fails the recording. The messages are normalised (uaNorm) so the
// recording is the same on every run.
func (u *uaServer) record(calls ...uaCall) (*recording, error) {
	p, err := startProxy(u.addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), recTimeout)
	defer cancel()
	c, err := opcua.NewClient("opc.tcp://"+p.Addr(),
		opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.SecurityPolicy("None"),
		opcua.AutoReconnect(false), opcua.SessionName("otgw-hmi"),
		opcua.RequestTimeout(recTimeout/2), opcua.DialTimeout(recTimeout/2))
	if err == nil {
		p.mark()
		err = c.Connect(ctx)
		for i := 0; err == nil && i < len(calls); i++ {
			p.mark()
			if cerr := calls[i](ctx, c); cerr != nil {
				var sc ua.StatusCode
				if !errors.As(cerr, &sc) {
					err = fmt.Errorf("gen: gopcua call %d: %w", i, cerr)
				}
			}
		}
		p.mark() // teardown: never played
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = c.Close(cctx)
		ccancel()
	}
	r, ferr := p.finish(uaLen)
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	if len(r.steps) != len(calls)+2 {
		return nil, fmt.Errorf("gen: recorded %d steps, want %d", len(r.steps), len(calls)+2)
	}
	// Drop the teardown (CloseSession, CLO): how much of it the proxy saw
	// before it stopped varies from run to run, and no case plays it.
	r.msgs = r.msgs[:r.steps[len(r.steps)-1]]
	r.steps = r.steps[:len(r.steps)-1]
	n := newUANorm()
	for i := range r.msgs {
		if r.msgs[i].b, err = n.msg(r.msgs[i].client, r.msgs[i].b); err != nil {
			return nil, fmt.Errorf("gen: message %d: %w", i, err)
		}
	}
	return r, nil
}

// uaLen is the MessageSize of the UA-TCP message at the start of b (OPC
// 10000-6 section 7.1.2).
func uaLen(b []byte) int {
	if len(b) < 8 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(b[4:]))
}

// Fixed values the normaliser writes in place of what differs from run to
// run.
var (
	uaTime      = time.Date(2024, 5, 6, 8, 0, 0, 0, time.UTC)
	uaAuthToken = ua.NewNumericNodeID(0, 1001)
	uaSessionID = ua.NewGUIDNodeID(1, "5d6c5e1a-2f1b-4c1e-9a4d-000000000001")
	uaLoopback  = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
)

const (
	uaChannelID = 7
	uaTokenID   = 1
	uaEndpoint  = "192.0.2.30:4840"
)

// uaNorm rewrites, in the recorded messages of one connection, the values
// that differ from run to run, and nothing else: the secure channel id
// and token id the server drew, sequence numbers (per direction, from 1),
// request ids and request handles (renumbered in order of first use),
// timestamps, nonces, the session id and authentication token, and the
// loopback host:port in endpoint URLs (the suite's server address). Every
// service body is decoded and re-encoded with gopcua's own codec (ua), and
// must re-encode to the recorded bytes before anything is changed.
type uaNorm struct {
	seq     [2]uint32 // [0] server, [1] client
	ids     map[uint32]uint32
	handles map[uint32]uint32
}

func newUANorm() *uaNorm {
	return &uaNorm{ids: map[uint32]uint32{}, handles: map[uint32]uint32{}}
}

func renumber(m map[uint32]uint32, v uint32) uint32 {
	if v == 0 {
		return 0
	}
	n, ok := m[v]
	if !ok {
		n = uint32(len(m) + 1)
		m[v] = n
	}
	return n
}

// msg returns the normalised copy of one UA-TCP message sent by the
// client (else by the server).
func (n *uaNorm) msg(client bool, b []byte) ([]byte, error) {
	if len(b) < 8 {
		return nil, errors.New("short UA-TCP message")
	}
	typ := string(b[:3])
	var head, body []byte
	switch typ {
	case "HEL":
		h := new(uacp.Hello)
		if _, err := h.Decode(b[8:]); err != nil {
			return nil, fmt.Errorf("HEL: %w", err)
		}
		h.EndpointURL = uaLoopback.ReplaceAllString(h.EndpointURL, uaEndpoint)
		enc, err := ua.Encode(h)
		if err != nil {
			return nil, err
		}
		return uaFrame(b[:4], nil, enc), nil
	case "OPN":
		// Channel id, then the asymmetric security header: policy URI,
		// sender certificate, receiver thumbprint (7.1.2.3).
		off := 12
		for range 3 {
			if len(b) < off+4 {
				return nil, errors.New("OPN: short security header")
			}
			l := int(int32(binary.LittleEndian.Uint32(b[off:])))
			off += 4 + max(l, 0)
		}
		if len(b) < off+8 {
			return nil, errors.New("OPN: short sequence header")
		}
		head = append([]byte(nil), b[8:off+8]...)
		n.channel(head[0:4])
		n.sequence(client, head[off-8:])
		body = b[off+8:]
	case "MSG", "CLO":
		if len(b) < 24 {
			return nil, fmt.Errorf("%s: short header", typ)
		}
		head = append([]byte(nil), b[8:24]...)
		n.channel(head[0:4])
		if binary.LittleEndian.Uint32(head[4:]) != 0 {
			binary.LittleEndian.PutUint32(head[4:], uaTokenID)
		}
		n.sequence(client, head[8:])
		body = b[24:]
	default: // ACK, ERR: nothing drawn at run time
		return append([]byte(nil), b...), nil
	}
	if b[3] != 'F' {
		return nil, fmt.Errorf("%s: chunk type %q (the recorder handles final chunks only)", typ, b[3])
	}
	nb, err := n.service(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	return uaFrame(b[:4], head, nb), nil
}

func uaFrame(typ, head, body []byte) []byte {
	out := append([]byte(nil), typ...)
	out = binary.LittleEndian.AppendUint32(out, uint32(8+len(head)+len(body)))
	out = append(out, head...)
	return append(out, body...)
}

func (n *uaNorm) channel(b []byte) {
	if binary.LittleEndian.Uint32(b) != 0 {
		binary.LittleEndian.PutUint32(b, uaChannelID)
	}
}

// sequence rewrites a sequence header (sequence number, request id) in
// place: sequence numbers count per direction, request ids are shared (a
// response carries its request's).
func (n *uaNorm) sequence(client bool, h []byte) {
	d := 0
	if client {
		d = 1
	}
	n.seq[d]++
	binary.LittleEndian.PutUint32(h[0:], n.seq[d])
	binary.LittleEndian.PutUint32(h[4:], renumber(n.ids, binary.LittleEndian.Uint32(h[4:])))
}

func (n *uaNorm) service(body []byte) ([]byte, error) {
	typeID, v, err := ua.DecodeService(body)
	if err != nil {
		return nil, fmt.Errorf("decode service: %w", err)
	}
	enc, err := encodeService(typeID, v)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(enc, body) {
		return nil, fmt.Errorf("%T does not re-encode to the recorded bytes", v)
	}
	n.walk(reflect.ValueOf(v), "")
	return encodeService(typeID, v)
}

func encodeService(typeID *ua.ExpandedNodeID, v any) ([]byte, error) {
	a, err := ua.Encode(typeID)
	if err != nil {
		return nil, err
	}
	b, err := ua.Encode(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return append(a, b...), nil
}

var (
	timeType   = reflect.TypeFor[time.Time]()
	nodeIDType = reflect.TypeFor[*ua.NodeID]()
)

// walk normalises the exported fields of a decoded service value; field
// is the name of the struct field v was found in.
func (n *uaNorm) walk(v reflect.Value, field string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if v.Type() == nodeIDType && v.CanSet() {
			switch field {
			case "AuthenticationToken":
				v.Set(reflect.ValueOf(uaAuthToken))
			case "SessionID":
				v.Set(reflect.ValueOf(uaSessionID))
			}
			return
		}
		n.walk(v.Elem(), field)
	case reflect.Interface:
		if !v.IsNil() {
			n.walk(v.Elem(), field)
		}
	case reflect.Struct:
		if v.Type() == timeType {
			if v.CanSet() && !v.Interface().(time.Time).IsZero() {
				v.Set(reflect.ValueOf(uaTime))
			}
			return
		}
		t := v.Type()
		for i := range t.NumField() {
			if t.Field(i).IsExported() {
				n.walk(v.Field(i), t.Field(i).Name)
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if (field == "ClientNonce" || field == "ServerNonce") && v.Len() > 0 && v.CanSet() {
				v.SetBytes(bytes.Repeat([]byte{0x5a}, v.Len()))
			}
			return
		}
		for i := range v.Len() {
			n.walk(v.Index(i), field)
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(uaLoopback.ReplaceAllString(v.String(), uaEndpoint))
		}
	case reflect.Uint32:
		if !v.CanSet() {
			return
		}
		switch field {
		case "RequestHandle":
			v.SetUint(uint64(renumber(n.handles, uint32(v.Uint()))))
		case "ChannelID":
			if v.Uint() != 0 {
				v.SetUint(uaChannelID)
			}
		case "TokenID":
			if v.Uint() != 0 {
				v.SetUint(uaTokenID)
			}
		}
	}
}
