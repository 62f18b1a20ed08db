package server

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ldcd/ldcd/client"
)

// alarmNoSpace is the alarm a node raises while its data directory's file
// system has less free space than --min-free-space.
const alarmNoSpace = "nospace"

// diskState is the node's view of its free disk space. The reserve is what
// lets a node stay correct when its disk fills: writes stop while there is
// still room for what is in flight (entries being replicated, a log segment
// rotation, the state machine's commits), instead of a write failing with
// ENOSPC half-way, which would take the node's log out of service. As with
// etcd's NOSPACE alarm, reads go on, and writes resume by themselves once
// space is freed.
type diskState struct {
	nospace atomic.Bool
	free    atomic.Uint64 // bytes free for an unprivileged user at the last check
}

// diskCheckEvery is how often the free space is read (one statfs).
const diskCheckEvery = 250 * time.Millisecond

// watchDisk checks the free space of the data directory until the node
// closes, raising and clearing the alarm.
func (s *Server) watchDisk() {
	defer s.wg.Done()
	if s.cfg.MinFreeSpace == 0 {
		return
	}
	t := time.NewTicker(diskCheckEvery)
	defer t.Stop()
	for {
		s.checkDisk()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkDisk() {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.DataDir, &st); err != nil {
		s.logger.Warn("cannot read the data directory's free space", "dir", s.cfg.DataDir, "error", err)
		return
	}
	free := st.Bavail * uint64(st.Bsize)
	s.disk.free.Store(free)
	low := free < s.cfg.MinFreeSpace
	if s.disk.nospace.Swap(low) == low {
		return
	}
	alarm := ""
	if low {
		alarm = alarmNoSpace
		s.logger.Error("NOSPACE alarm raised: free disk space below --min-free-space; writes to this node's groups are refused until space is freed",
			"dir", s.cfg.DataDir, "free_bytes", free, "min_free_bytes", s.cfg.MinFreeSpace)
	} else {
		s.logger.Warn("NOSPACE alarm cleared: free disk space back above --min-free-space; writes resume", "free_bytes", free)
	}
	if err := s.mem.setTag(tagAlarm, alarm); err != nil {
		s.logger.Warn("cannot publish the alarm to the cluster", "error", err)
	}
}

// noSpace returns the nodes with a replica of group gid (this one, and the
// members of its configuration as this replica knows it) that have raised
// the NOSPACE alarm: a write to gid would have to be stored on each.
func (s *Server) noSpace(gid string) []string {
	var out []string
	if s.disk.nospace.Load() {
		out = append(out, s.cfg.Name)
	}
	alarms := s.mem.alarms()
	if len(alarms) == 0 {
		return out // the common case: one atomic load
	}
	g, ok := s.host.Group(gid)
	if !ok {
		return out
	}
	servers, err := g.Servers()
	if err != nil {
		return out
	}
	for _, sv := range servers {
		if sv.ID == s.cfg.Name {
			continue
		}
		if alarms[sv.ID] == alarmNoSpace {
			out = append(out, sv.ID)
		}
	}
	return out
}

// refuseNoSpace answers 507 if a replica of gid is out of space.
func (s *Server) refuseNoSpace(w http.ResponseWriter, gid string) bool {
	nodes := s.noSpace(gid)
	if len(nodes) == 0 {
		return false
	}
	writeJSON(w, http.StatusInsufficientStorage, client.ErrorBody{
		Error: fmt.Sprintf("NOSPACE: %v below --min-free-space (this node has %d MiB free, wants %d MiB): writes to %s are refused until space is freed; reads go on (nothing was applied)",
			nodes, s.disk.free.Load()>>20, s.cfg.MinFreeSpace>>20, gid),
		Alarm: alarmNoSpace,
	})
	return true
}
