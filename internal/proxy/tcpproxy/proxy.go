package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Stats are the TCP proxy's Envoy-named counters (tcp.<stat_prefix>.*).
type Stats struct {
	CxTotal, NoRoute, RxBytes, TxBytes, IdleTimeout, MaxDuration *stats.Counter
	ConnectAttemptsExceeded                                      *stats.Counter
}

func newStats(s *stats.Store, prefix string) Stats {
	p := "tcp." + prefix + "."
	return Stats{
		CxTotal:                 s.Counter(p + "downstream_cx_total"),
		NoRoute:                 s.Counter(p + "downstream_cx_no_route"),
		RxBytes:                 s.Counter(p + "downstream_cx_rx_bytes_total"),
		TxBytes:                 s.Counter(p + "downstream_cx_tx_bytes_total"),
		IdleTimeout:             s.Counter(p + "idle_timeout"),
		MaxDuration:             s.Counter(p + "max_downstream_connection_duration"),
		ConnectAttemptsExceeded: s.Counter(p + "upstream_cx_connect_attempts_exceeded"),
	}
}

// Proxy serves the connections of one filter chain's tcp_proxy.
type Proxy struct {
	cfg      *xdsconfig.TCPProxy
	clusters func(name string) *upstream.Cluster
	stats    Stats
	log      *slog.Logger
	// OnDone, when set, is given each connection's record once it is closed (the access log hook).
	// It must not keep the Info.
	OnDone func(*streaminfo.Info)
	// observers are the network filters before tcp_proxy that watch connections (istio.stats).
	observers []filters.ConnObserver
}

// New returns the proxy for cfg. clusters looks up a running cluster by name (nil when there is
// none); it is called once per connection.
func New(cfg *xdsconfig.TCPProxy, clusters func(name string) *upstream.Cluster, store *stats.Store, log *slog.Logger, opts ...filters.EnvOption) *Proxy {
	p := &Proxy{cfg: cfg, clusters: clusters, stats: newStats(store, cfg.StatPrefix), log: log}
	env := filters.Env{Stats: store, StatPrefix: cfg.StatPrefix, Inbound: cfg.Inbound}
	for _, o := range opts {
		o(&env)
	}
	for _, oc := range cfg.Observers {
		p.observers = append(p.observers, oc.BuildConnObserver(env))
	}
	if logs := cfg.AccessLogs; len(logs) > 0 {
		p.OnDone = func(i *streaminfo.Info) {
			for _, l := range logs {
				l.Log(i)
			}
		}
	}
	return p
}

// ServeConn proxies down to the upstream cluster until both directions are done. The caller
// closes down.
func (p *Proxy) ServeConn(ctx context.Context, down net.Conn, info *listener.ConnInfo) {
	si := streaminfo.Info{
		Start:                time.Now(),
		DownstreamRemoteAddr: down.RemoteAddr().String(),
		DownstreamLocalAddr:  down.LocalAddr().String(),
		ServerName:           info.ServerName,
	}
	if tc, ok := down.(*tls.Conn); ok {
		st := tc.ConnectionState()
		si.SetDownstreamTLS(&st)
	}
	p.stats.CxTotal.Inc()
	defer p.finish(&si)

	// Network filters that authorize (RBAC) decide before anything is dialled.
	for _, o := range p.observers {
		if a, ok := o.(filters.ConnAuthorizer); ok && !a.AuthorizeConn(ctx, down, &si) {
			return
		}
	}
	up := p.connect(ctx, down, &si)
	if up == nil {
		return
	}
	for _, o := range p.observers {
		o.OnUpstreamConnected(&si)
	}
	p.pipe(ctx, down, up, &si)
}

func (p *Proxy) finish(si *streaminfo.Info) {
	si.Duration = time.Since(si.Start)
	for _, o := range p.observers {
		o.OnConnClosed(si)
	}
	if p.OnDone != nil {
		p.OnDone(si)
	}
}

// connect picks a host and dials it, up to max_connect_attempts times.
func (p *Proxy) connect(ctx context.Context, down net.Conn, si *streaminfo.Info) net.Conn {
	name := p.cfg.PickCluster(rand.Uint64())
	si.UpstreamCluster = name
	cl := p.clusters(name)
	if cl == nil {
		p.stats.NoRoute.Inc()
		si.SetFlag(streaminfo.NoClusterFound)
		return nil
	}
	for attempt := uint32(0); attempt < max(p.cfg.MaxConnectAttempts, 1); attempt++ {
		var host *upstream.Host
		if cl.IsOriginalDst() {
			host = cl.OriginalDst("", down.LocalAddr().String())
		} else {
			host = cl.Pick()
		}
		if host == nil {
			cl.Stats.NoneHealthy.Inc()
			si.SetFlag(streaminfo.NoHealthyUpstream)
			return nil
		}
		si.UpstreamHost = host.Address
		si.UpstreamWorkload = host.IstioWorkload()
		si.Attempts++
		up, err := cl.Dial(ctx, host)
		if err == nil {
			return up
		}
		p.log.Debug("upstream connect failed", "cluster", name, "host", host.Target(), "error", err)
		if ctx.Err() != nil {
			break
		}
	}
	if si.Attempts >= int(max(p.cfg.MaxConnectAttempts, 1)) {
		p.stats.ConnectAttemptsExceeded.Inc()
	}
	si.SetFlag(streaminfo.UpstreamConnectionFailure)
	return nil
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies both ways. A FIN from one side is passed on as a half-close of the other; the
// connection ends when both directions have, or on an error, the idle timeout, the maximum
// duration, or ctx.
func (p *Proxy) pipe(ctx context.Context, down, up net.Conn, si *streaminfo.Info) {
	defer up.Close()
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = down.Close()
			_ = up.Close()
		})
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()

	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	if d := p.cfg.IdleTimeout; d > 0 {
		var t atomic.Pointer[time.Timer]
		var over atomic.Bool
		defer over.Store(true)
		var check func()
		check = func() {
			if over.Load() {
				return
			}
			if idle := time.Since(time.Unix(0, last.Load())); idle < d {
				t.Store(time.AfterFunc(d-idle, check))
				return
			}
			p.stats.IdleTimeout.Inc()
			closeBoth()
		}
		t.Store(time.AfterFunc(d, check))
		defer func() { t.Load().Stop() }()
	}
	if d := p.cfg.MaxConnectionDuration; d > 0 {
		t := time.AfterFunc(d, func() {
			p.stats.MaxDuration.Inc()
			closeBoth()
		})
		defer t.Stop()
	}

	var rx, tx int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		rx = copyHalf(up, down, p.stats.RxBytes, &last, closeBoth)
	}()
	tx = copyHalf(down, up, p.stats.TxBytes, &last, closeBoth)
	<-done
	si.BytesReceived, si.BytesSent = rx, tx
}

// copyHalf copies src to dst, counting bytes; at src's EOF it half-closes dst, on an error it
// closes both connections.
func copyHalf(dst, src net.Conn, counter *stats.Counter, last *atomic.Int64, closeBoth func()) int64 {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			counter.Add(uint64(n))
			total += int64(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				closeBoth()
				return total
			}
		}
		if errors.Is(rerr, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				if cw.CloseWrite() == nil {
					return total
				}
			}
			closeBoth()
			return total
		}
		if rerr != nil {
			closeBoth()
			return total
		}
	}
}
