package server

import (
	"github.com/ldcd/ldcd/cdc"
	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a node's Prometheus metrics, registered into the node's own
// registry. hashicorp/raft's own metrics have no group label, so the
// per-group figures are read from each group's status at scrape time.
type metrics struct {
	applySeconds *prometheus.HistogramVec
	requests     *prometheus.CounterVec
	cdcLag       prometheus.Histogram
}

func newMetrics(reg *prometheus.Registry, host *raftgroup.Host, view func() *client.ClusterInfo, follower func() *cdc.FollowerStatus) *metrics {
	m := &metrics{
		applySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ldcd_apply_duration_seconds",
			Help:    "Time from proposing a write at the group leader to its being applied.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}, []string{"group"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldcd_http_requests_total",
			Help: "HTTP requests served, by route and status code.",
		}, []string{"route", "code"}),
		cdcLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ldcd_cdc_replication_lag_seconds",
			Help:    "On a CZone node: time from the leader appending a global change to this copy applying it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	reg.MustRegister(m.applySeconds, m.requests, m.cdcLag, &groupCollector{host: host}, &placementCollector{view: view}, &cdcCollector{status: follower},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var (
	descLeader  = prometheus.NewDesc("ldcd_group_is_leader", "1 if this node leads the group.", []string{"group"}, nil)
	descTerm    = prometheus.NewDesc("ldcd_group_term", "Current Raft term of the group on this node.", []string{"group"}, nil)
	descLast    = prometheus.NewDesc("ldcd_group_last_index", "Last Raft log index of the group on this node.", []string{"group"}, nil)
	descCommit  = prometheus.NewDesc("ldcd_group_commit_index", "Raft commit index of the group on this node.", []string{"group"}, nil)
	descApplied = prometheus.NewDesc("ldcd_group_applied_index", "Index applied to the group's state machine on this node.", []string{"group"}, nil)
	descVoters  = prometheus.NewDesc("ldcd_group_voters", "Voters in the group's configuration.", []string{"group"}, nil)
	descGroups  = prometheus.NewDesc("ldcd_groups", "Raft groups hosted by this node.", nil, nil)
	descDamaged = prometheus.NewDesc("ldcd_replica_damaged", "1 for a replica here whose log failed its checksums: it neither serves nor votes until its group has removed it and it is rebuilt.", []string{"group"}, nil)
)

type groupCollector struct{ host *raftgroup.Host }

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descTerm, descLast, descCommit, descApplied, descVoters, descGroups, descDamaged} {
		ch <- d
	}
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	groups := c.host.Groups()
	ch <- prometheus.MustNewConstMetric(descGroups, prometheus.GaugeValue, float64(len(groups)))
	for id := range c.host.Damaged() {
		ch <- prometheus.MustNewConstMetric(descDamaged, prometheus.GaugeValue, 1, id)
	}
	for _, g := range groups {
		st := g.Status()
		leader, voters := 0.0, 0.0
		if st.State == "Leader" {
			leader = 1
		}
		for _, sv := range st.Servers {
			if sv.Voter {
				voters++
			}
		}
		ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader, st.ID)
		ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(st.Term), st.ID)
		ch <- prometheus.MustNewConstMetric(descLast, prometheus.GaugeValue, float64(st.LastIndex), st.ID)
		ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(st.CommitIndex), st.ID)
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(st.AppliedIndex), st.ID)
		ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, voters, st.ID)
	}
}

var (
	descPinned     = prometheus.NewDesc("ldcd_placement_leader_pinned", "1 if the group's leader is in its serving zone (exported by the global leader).", []string{"group"}, nil)
	descViolations = prometheus.NewDesc("ldcd_placement_violations", "Groups whose leader is outside its serving zone or that have no leader (exported by the global leader).", nil, nil)
	descInFlight   = prometheus.NewDesc("ldcd_placement_operations_in_flight", "Groups whose Raft configuration differs from the desired placement (exported by the global leader).", nil, nil)
	descEpoch      = prometheus.NewDesc("ldcd_placement_epoch", "The routing epoch (exported by the global leader).", nil, nil)
	descUnavail    = prometheus.NewDesc("ldcd_group_unavailable", "1 if the group has no leader and a majority of its voters has been down for longer than the dead-node timeout: it needs them back or `ldcd recover` (exported by the global leader).", []string{"group"}, nil)
)

// placementCollector exports the placement driver's view; only the global
// group's leader has one.
type placementCollector struct{ view func() *client.ClusterInfo }

func (c *placementCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPinned
	ch <- descViolations
	ch <- descInFlight
	ch <- descEpoch
	ch <- descUnavail
}

func (c *placementCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.view()
	if info == nil {
		return
	}
	violations, inFlight := 0.0, 0.0
	for _, g := range info.Groups {
		pinned := 0.0
		if g.Pinned && g.Leader != "" {
			pinned = 1
		} else {
			violations++
		}
		if len(g.Desired) > 0 {
			inFlight++
		}
		ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, pinned, g.ID)
		unavailable := 0.0
		if g.Status == GroupUnavailable {
			unavailable = 1
		}
		ch <- prometheus.MustNewConstMetric(descUnavail, prometheus.GaugeValue, unavailable, g.ID)
	}
	ch <- prometheus.MustNewConstMetric(descViolations, prometheus.GaugeValue, violations)
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, inFlight)
	ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(info.Epoch))
}

var (
	descCDCLag     = prometheus.NewDesc("ldcd_cdc_lag_seconds", "On a CZone node: how stale the copy of the global group may be (0 when caught up with its source).", []string{"group", "source"}, nil)
	descCDCEntries = prometheus.NewDesc("ldcd_cdc_lag_entries", "On a CZone node: entries the copy trails its source by.", []string{"group", "source"}, nil)
	descCDCApplied = prometheus.NewDesc("ldcd_cdc_applied_index", "On a CZone node: the copy's applied index.", []string{"group"}, nil)
)

// cdcCollector exports a CZone follower's progress.
type cdcCollector struct{ status func() *cdc.FollowerStatus }

func (c *cdcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCDCLag
	ch <- descCDCEntries
	ch <- descCDCApplied
}

func (c *cdcCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.status()
	if st == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descCDCLag, prometheus.GaugeValue, float64(st.LagMs)/1000, st.Group, st.Source)
	ch <- prometheus.MustNewConstMetric(descCDCEntries, prometheus.GaugeValue, float64(st.LagIndex), st.Group, st.Source)
	ch <- prometheus.MustNewConstMetric(descCDCApplied, prometheus.GaugeValue, float64(st.AppliedIndex), st.Group)
}
