// Package autoregister is Istio's WorkloadEntry auto-registration: a proxy
// whose node metadata names a WorkloadGroup (AUTO_REGISTER_GROUP, set by
// ISTIO_META_AUTO_REGISTER_GROUP) gets a WorkloadEntry made from the
// group's template and its own address while it is connected, and for a
// grace period after its last stream closes, so that a reconnect keeps it.
//
// A proxy whose PROXY_CONFIG has a readinessProbe runs it and reports the
// result on its stream (OnHealth); its entry then carries Istio's
// health-checks annotation and a Healthy condition, and is an endpoint
// only while that is True (model.WorkloadHealthy).
//
// The Controller only decides which entries should exist. In file mode the
// control plane merges Entries into the config it serves; in Kubernetes
// mode a Writer puts them into the API server (see kube.go), where the
// Kubernetes source reads them back like any WorkloadEntry.
package autoregister

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Istio's names for auto-registration.
const (
	// GroupMetadata is the node metadata key naming the proxy's group.
	GroupMetadata = "AUTO_REGISTER_GROUP"
	// GroupAnnotation on an auto-registered WorkloadEntry names its group.
	GroupAnnotation = "istio.io/autoRegistrationGroup"
	// ControllerAnnotation names the control plane replica the workload is
	// connected to.
	ControllerAnnotation = "istio.io/workloadController"
	// ConnectedAtAnnotation and DisconnectedAtAnnotation hold when the
	// workload connected and disconnected (RFC 3339, nanoseconds).
	ConnectedAtAnnotation    = "istio.io/connectedAt"
	DisconnectedAtAnnotation = "istio.io/disconnectedAt"
	// DefaultGracePeriod is istiod's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD.
	DefaultGracePeriod = 10 * time.Second
)

// Options configure a Controller.
type Options struct {
	GracePeriod time.Duration // 0: DefaultGracePeriod
	// Identity is this replica's name in ControllerAnnotation.
	Identity string
	// OnChange, if set, is called (on Run's goroutine) after Entries
	// changed.
	OnChange func()
	Logger   *slog.Logger
}

// registration is one proxy's claim to an entry.
type registration struct {
	namespace, group, ip, network string
	labels                        map[string]string
	connectedAt                   time.Time
	disconnectedAt                time.Time // zero while connected
	// probes: the proxy runs a readinessProbe and reports its result;
	// health is its last report (nil before the first).
	probes bool
	health *model.Condition
}

// Controller tracks registered proxies; see the package doc.
type Controller struct {
	opts  Options
	kicks chan struct{}

	mu     sync.Mutex
	regs   map[string]*registration // by node ID
	groups map[string]*model.WorkloadGroup
	last   []*model.WorkloadEntry
}

// New makes a Controller; Run drives its grace timers and OnChange.
func New(opts Options) *Controller {
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{opts: opts, kicks: make(chan struct{}, 1), regs: map[string]*registration{}, groups: map[string]*model.WorkloadGroup{}}
}

func (c *Controller) kick() {
	select {
	case c.kicks <- struct{}{}:
	default:
	}
}

// OnConnect registers a proxy whose metadata names a group, connected now
// (xds.Options' hook: a stream of it opened). It does not block.
func (c *Controller) OnConnect(node *corev3.Node) {
	md := node.GetMetadata().GetFields()
	group := md[GroupMetadata].GetStringValue()
	if group == "" {
		return
	}
	parts := strings.Split(node.GetId(), "~")
	ns := md["NAMESPACE"].GetStringValue()
	if ns == "" && len(parts) == 4 {
		if _, after, ok := strings.Cut(parts[2], "."); ok {
			ns = after
		}
	}
	ip := ""
	if ips := md["INSTANCE_IPS"].GetStringValue(); ips != "" {
		ip, _, _ = strings.Cut(ips, ",")
	} else if len(parts) == 4 {
		ip = parts[1]
	}
	if ns == "" || ip == "" {
		c.opts.Logger.Warn("auto-registration: proxy names a WorkloadGroup but has no namespace or IP", "proxy", node.GetId(), "group", group)
		return
	}
	labels := map[string]string{}
	for k, v := range md["LABELS"].GetStructValue().GetFields() {
		labels[k] = v.GetStringValue()
	}
	r := &registration{namespace: ns, group: group, ip: strings.TrimSpace(ip), network: md["NETWORK"].GetStringValue(),
		labels: labels, connectedAt: time.Now(), probes: md["PROXY_CONFIG"].GetStructValue().GetFields()["readinessProbe"] != nil}
	c.mu.Lock()
	if old := c.regs[node.GetId()]; old != nil && old.probes && r.probes {
		// A reconnect: the workload's health is what it was, until the
		// proxy reports again (as the condition istiod wrote stays).
		r.health = old.health
	}
	c.regs[node.GetId()] = r
	c.mu.Unlock()
	c.kick()
}

// OnHealth records a proxy's health report (xds.Options' hook): the
// Healthy condition of its entry, which makes the entry an endpoint or
// takes it out (model.WorkloadHealthy). It does not block.
func (c *Controller) OnHealth(nodeID string, healthy bool, message string) {
	cond := &model.Condition{Type: model.ConditionHealthy, Status: "True"}
	if !healthy {
		cond.Status, cond.Message = "False", message
	}
	c.mu.Lock()
	r := c.regs[nodeID]
	if r != nil {
		r.health = cond
	}
	c.mu.Unlock()
	if r == nil {
		c.opts.Logger.Warn("auto-registration: health report from a proxy without an auto-registered entry; ignored", "proxy", nodeID)
		return
	}
	c.opts.Logger.Info("auto-registration: workload health", "proxy", nodeID, "healthy", healthy, "message", message)
	c.kick()
}

// OnDisconnect starts the grace period of a proxy whose last stream closed.
func (c *Controller) OnDisconnect(nodeID string) {
	c.mu.Lock()
	r := c.regs[nodeID]
	if r != nil {
		r.disconnectedAt = time.Now()
	}
	c.mu.Unlock()
	if r != nil {
		c.kick()
	}
}

// SetGroups hands the Controller the WorkloadGroups of the latest config.
func (c *Controller) SetGroups(groups []*model.WorkloadGroup) {
	m := make(map[string]*model.WorkloadGroup, len(groups))
	for _, g := range groups {
		m[g.Namespace+"/"+g.Name] = g
	}
	c.mu.Lock()
	c.groups = m
	c.mu.Unlock()
	c.kick()
}

// GracePeriod is how long an entry outlives its proxy's last stream.
func (c *Controller) GracePeriod() time.Duration { return c.opts.GracePeriod }

// Entries are the WorkloadEntries that should exist now, sorted by
// namespace and name. They are not to be modified.
func (c *Controller) Entries() []*model.WorkloadEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Run expires registrations past their grace period and calls OnChange
// when Entries change, until ctx is done; the channel closes then.
func (c *Controller) Run(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for {
			next, changed := c.update(time.Now())
			if changed && c.opts.OnChange != nil {
				c.opts.OnChange()
			}
			timer.Reset(next)
			select {
			case <-ctx.Done():
				return
			case <-c.kicks:
			case <-timer.C:
			}
		}
	}()
	return done
}

// update drops expired registrations and recomputes the entries; next is
// when the next registration expires (an hour if none does).
func (c *Controller) update(now time.Time) (next time.Duration, changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next = time.Hour
	var out []*model.WorkloadEntry
	for id, r := range c.regs {
		if !r.disconnectedAt.IsZero() {
			left := r.disconnectedAt.Add(c.opts.GracePeriod).Sub(now)
			if left <= 0 {
				delete(c.regs, id)
				c.opts.Logger.Info("auto-registration: grace period over; entry removed", "proxy", id, "group", r.namespace+"/"+r.group)
				continue
			}
			next = min(next, left)
		}
		g := c.groups[r.namespace+"/"+r.group]
		if g == nil || g.Spec.GetTemplate() == nil {
			continue // the group may come with a later config
		}
		out = append(out, c.entry(g, r))
	}
	slices.SortFunc(out, func(a, b *model.WorkloadEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	out = slices.CompactFunc(out, func(a, b *model.WorkloadEntry) bool { return a.Namespace == b.Namespace && a.Name == b.Name })
	changed = !slices.EqualFunc(out, c.last, sameEntry)
	if changed {
		c.last = out
	}
	return next, changed
}

func sameEntry(a, b *model.WorkloadEntry) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && maps.Equal(a.Labels, b.Labels) &&
		maps.Equal(a.Annotations, b.Annotations) && slices.Equal(a.Conditions, b.Conditions) && proto.Equal(a.Spec, b.Spec)
}

// EntryName is Istio's name of an auto-registered entry: the group, the
// address (an IPv6 address's colons as '-') and the network, if any.
func EntryName(group, ip, network string) string {
	parts := []string{group, strings.ReplaceAll(ip, ":", "-")}
	if network != "" {
		parts = append(parts, network)
	}
	name := strings.Join(parts, "-")
	if len(name) > 253 {
		name = name[len(name)-253:]
	}
	return name
}

// entry is the WorkloadEntry r gets from g, as istiod builds it: the
// template with the proxy's address; labels from the template, the group's
// metadata and the proxy, in rising precedence; the group's annotations
// and Istio's auto-registration ones.
func (c *Controller) entry(g *model.WorkloadGroup, r *registration) *model.WorkloadEntry {
	spec := proto.CloneOf(g.Spec.GetTemplate())
	spec.Address = r.ip
	if r.network != "" {
		spec.Network = r.network
	}
	labels := map[string]string{}
	maps.Copy(labels, spec.GetLabels())
	maps.Copy(labels, g.Spec.GetMetadata().GetLabels())
	maps.Copy(labels, r.labels)
	spec.Labels = labels
	ann := map[string]string{}
	maps.Copy(ann, g.Spec.GetMetadata().GetAnnotations())
	ann[GroupAnnotation] = r.group
	if c.opts.Identity != "" {
		ann[ControllerAnnotation] = c.opts.Identity
	}
	ann[ConnectedAtAnnotation] = r.connectedAt.UTC().Format(time.RFC3339Nano)
	if !r.disconnectedAt.IsZero() {
		ann[DisconnectedAtAnnotation] = r.disconnectedAt.UTC().Format(time.RFC3339Nano)
	}
	var conds []model.Condition
	if r.probes {
		ann[model.HealthChecksAnnotation] = "true"
		if r.health != nil {
			conds = []model.Condition{*r.health}
		}
	}
	return &model.WorkloadEntry{
		Meta: model.Meta{Kind: "WorkloadEntry", Namespace: r.namespace, Name: EntryName(r.group, r.ip, r.network),
			Labels: maps.Clone(labels), Annotations: ann, Conditions: conds, Source: model.Source{File: "auto-registration"}},
		Spec: spec,
	}
}

// Merge is cfg with entries added to its WorkloadEntries (a shallow copy;
// cfg is not modified). An entry whose name a configured WorkloadEntry
// already has is left out: the user's wins.
func Merge(cfg *model.Config, entries []*model.WorkloadEntry) *model.Config {
	if len(entries) == 0 {
		return cfg
	}
	out := *cfg
	have := map[string]bool{}
	for _, we := range cfg.WorkloadEntries {
		have[we.Namespace+"/"+we.Name] = true
	}
	out.WorkloadEntries = slices.Clone(cfg.WorkloadEntries)
	for _, e := range entries {
		if !have[e.Namespace+"/"+e.Name] {
			out.WorkloadEntries = append(out.WorkloadEntries, e)
		}
	}
	slices.SortStableFunc(out.WorkloadEntries, func(a, b *model.WorkloadEntry) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return &out
}
