package server

import (
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
}

func newMetrics(reg *prometheus.Registry, host *raftgroup.Host, view func() *client.ClusterInfo) *metrics {
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
	}
	reg.MustRegister(m.applySeconds, m.requests, &groupCollector{host: host}, &placementCollector{view: view},
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
)

type groupCollector struct{ host *raftgroup.Host }

func (c *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLeader, descTerm, descLast, descCommit, descApplied, descVoters, descGroups} {
		ch <- d
	}
}

func (c *groupCollector) Collect(ch chan<- prometheus.Metric) {
	groups := c.host.Groups()
	ch <- prometheus.MustNewConstMetric(descGroups, prometheus.GaugeValue, float64(len(groups)))
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
)

// placementCollector exports the placement driver's view; only the global
// group's leader has one.
type placementCollector struct{ view func() *client.ClusterInfo }

func (c *placementCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPinned
	ch <- descViolations
	ch <- descInFlight
	ch <- descEpoch
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
	}
	ch <- prometheus.MustNewConstMetric(descViolations, prometheus.GaugeValue, violations)
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, inFlight)
	ch <- prometheus.MustNewConstMetric(descEpoch, prometheus.GaugeValue, float64(info.Epoch))
}
