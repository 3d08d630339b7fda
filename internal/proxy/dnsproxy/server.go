// Package dnsproxy is trellis-proxy's DNS proxy (Istio's 15053): it answers A/AAAA queries for
// mesh names from a table derived from the standard xDS the proxy receives (see Build), and
// forwards every other query to the upstream resolvers, over UDP and TCP, with a per-query
// deadline (SERVFAIL when it passes) and truncation handled both ways.
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"
)

// DefaultTimeout bounds one forwarded query, all upstreams and the TCP retry included.
const DefaultTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Address is the host:port served over UDP and TCP, e.g. 127.0.0.1:15053 (port 0 picks one,
	// the same for both).
	Address string
	// Upstreams are the resolvers (host:port) unknown names go to, tried in order; empty reads
	// the nameservers of /etc/resolv.conf.
	Upstreams []string
	// Timeout bounds one forwarded query (default DefaultTimeout).
	Timeout time.Duration
	// Namespace is the proxy's namespace, for short names ("reviews"); DomainSuffix the cluster
	// domain (default cluster.local).
	Namespace, DomainSuffix string
	Logger                  *slog.Logger
}

// Server is a running DNS proxy. Its methods are safe for concurrent use.
type Server struct {
	cfg   Config
	log   *slog.Logger
	table atomic.Pointer[Table]

	udp, tcp *dns.Server
	addr     string
	wg       sync.WaitGroup

	mu  sync.Mutex // serialises table rebuilds
	res Resources
}

// New checks cfg and reads the upstreams; Start binds the sockets.
func New(cfg Config) (*Server, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Upstreams) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dns proxy: upstreams: %w", err)
		}
		for _, s := range cc.Servers {
			cfg.Upstreams = append(cfg.Upstreams, net.JoinHostPort(s, cc.Port))
		}
	}
	for i, u := range cfg.Upstreams {
		if _, _, err := net.SplitHostPort(u); err != nil {
			return nil, fmt.Errorf("dns proxy: upstreams[%d]: %w", i, err)
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.table.Store(Build(Resources{}, cfg.Namespace, cfg.DomainSuffix))
	return s, nil
}

// Start binds UDP and TCP on the configured address and serves until Shutdown.
func (s *Server) Start() error {
	pc, ln, err := listenUDPAndTCP(s.cfg.Address)
	if err != nil {
		return fmt.Errorf("dns proxy: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: notify}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Warn("dns proxy stopped", "error", err)
				notify() // it will not start: do not wait for it
			}
		})
	}
	// Shutdown of a dns.Server that has not started yet is refused and would leave it serving:
	// return only once both serve.
	<-started
	<-started
	return nil
}

// listenUDPAndTCP binds one address for UDP and TCP, as resolvers listen. With port 0 the kernel
// picks the UDP port, whose TCP twin may be taken: another is tried then.
func listenUDPAndTCP(addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		if port != "0" || attempt == 20 {
			return nil, nil, err
		}
	}
}

// Addr is the bound address (UDP and TCP share it).
func (s *Server) Addr() string { return s.addr }

// Shutdown stops both servers and waits for them.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			errs = append(errs, srv.ShutdownContext(ctx))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Table is the name table in force.
func (s *Server) Table() *Table { return s.table.Load() }

// SetTable replaces the name table.
func (s *Server) SetTable(t *Table) { s.table.Store(t) }

// Watcher is the xDS client's watcher interface (xdsclient.Watcher).
type Watcher interface {
	OnResources(typeURL string, resources []proto.Message) error
}

// Watch wraps the proxy's xDS watcher: every update the proxy accepts also rebuilds the name
// table, so DNS answers follow the config the proxy routes with.
func (s *Server) Watch(next Watcher) Watcher { return tap{s: s, next: next} }

type tap struct {
	s    *Server
	next Watcher
}

func (t tap) OnResources(typeURL string, resources []proto.Message) error {
	if err := t.next.OnResources(typeURL, resources); err != nil {
		return err // rejected: the proxy keeps its old config, and so do we
	}
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	if t.s.res.set(typeURL, resources) {
		t.s.table.Store(Build(t.s.res, t.s.cfg.Namespace, t.s.cfg.DomainSuffix))
	}
	return nil
}

// ttl of mesh answers: short, as Istio's (30s), since the table changes with the config.
const ttl = 30

// ServeDNS answers one query: from the table for mesh names, else from the upstreams.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	resp := s.answer(r)
	if resp == nil {
		return
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// Over UDP an answer must fit the client's buffer (512, or its EDNS0 size); Truncate
		// drops records and sets TC so the client retries over TCP.
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil && int(o.UDPSize()) > size {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns proxy: write", "error", err)
	}
}

func (s *Server) answer(r *dns.Msg) *dns.Msg {
	if r.Response || len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		if r.Opcode != dns.OpcodeQuery {
			m.Rcode = dns.RcodeNotImplemented
		}
		return m
	}
	q := r.Question[0]
	if q.Qclass == dns.ClassINET && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		h, cname, nx := s.table.Load().Lookup(q.Name)
		switch {
		case nx:
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeNameError)
			m.Authoritative = true
			return m
		case h != nil:
			return hostAnswer(r, q, h, cname)
		}
	}
	return s.forward(r)
}

func hostAnswer(r *dns.Msg, q dns.Question, h *Host, cname bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = true
	target := q.Name
	if cname {
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: h.Name})
		target = h.Name
	}
	if q.Qtype == dns.TypeA {
		for _, a := range h.V4 {
			ip := a.As4()
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.IP(ip[:])})
		}
	} else {
		for _, a := range h.V6 {
			ip := a.As16()
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: net.IP(ip[:])})
		}
	}
	// A name with only the other family: NOERROR with no records (NODATA), as a real server.
	return m
}

// forward asks the upstreams in turn over UDP, retrying over TCP when an answer comes back
// truncated, all within one deadline; SERVFAIL when none answers in time.
func (s *Server) forward(r *dns.Msg) *dns.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	for _, up := range s.cfg.Upstreams {
		resp, err := exchange(ctx, "udp", r, up)
		if err == nil && resp.Truncated {
			resp, err = exchange(ctx, "tcp", r, up)
		}
		if err == nil {
			resp.Id = r.Id
			return resp
		}
		s.log.Debug("dns proxy: upstream failed", "upstream", up, "name", r.Question[0].Name, "error", err)
		if ctx.Err() != nil {
			break
		}
	}
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeServerFailure)
	return m
}

func exchange(ctx context.Context, network string, r *dns.Msg, upstream string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, UDPSize: dns.DefaultMsgSize}
	if d, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(d)
	}
	resp, _, err := c.ExchangeContext(ctx, r, upstream)
	return resp, err
}
