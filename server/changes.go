package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/ldcd/ldcd/cdc"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
)

// feedHeartbeat is how often a quiet feed reports progress.
const feedHeartbeat = time.Second

// handleChanges serves GET /v1/changes/{group}?from=INDEX and
// GET /v1/changes/{group}/snapshot from a local replica of the group; a node
// without one redirects to a node with one.
func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET")
		return
	}
	gid := r.PathValue("group")
	if err := raftgroup.CheckGroupID(gid); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snapshot := false
	switch rest := r.PathValue("rest"); rest {
	case "":
	case "snapshot":
		snapshot = true
	default:
		writeError(w, http.StatusNotFound, "no route for "+r.URL.Path+"; want /v1/changes/{group} or /v1/changes/{group}/snapshot")
		return
	}
	from := uint64(1)
	if f := r.URL.Query().Get("from"); f != "" {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "from: want an index")
			return
		}
		from = max(v, 1)
	}
	var src *store.Store
	opts := cdc.FeedOptions{Heartbeat: feedHeartbeat}
	if g, ok := s.host.Group(gid); ok {
		src = g.Store()
		opts.CommitIndex = g.Raft().CommitIndex
		opts.Current = g.InTouch
	} else if f, st := s.czone(); st != nil && gid == placement.GlobalGroup {
		src = st // a CZone copy feeds other copies (cascading)
		opts.CommitIndex = func() uint64 { return f.Status().SourceIndex }
		opts.Current = func() error {
			if !f.Status().Connected {
				return errors.New("this CZone copy is not following a source now")
			}
			return nil
		}
	} else {
		s.redirectToReplica(w, r, gid)
		return
	}
	// A feed streams for as long as its client reads: no deadline for the
	// whole answer, one for each write.
	w = newStreamWriter(w, s.cfg.WriteTimeout)
	var err error
	if snapshot {
		err = cdc.ServeSnapshot(w, src, nil)
	} else {
		err = cdc.ServeFeed(r.Context(), w, src, from, opts)
	}
	if err != nil && !errors.Is(err, store.ErrClosed) && r.Context().Err() == nil {
		s.logger.Debug("change feed ended", "group", gid, "error", err)
	}
}

// redirectToReplica answers 307 with a node that hosts group gid.
func (s *Server) redirectToReplica(w http.ResponseWriter, r *http.Request, gid string) {
	p, _ := s.currentPlacement()
	if p != nil {
		if gp, ok := p.Group(gid); ok {
			for _, voter := range []bool{true, false} {
				for _, rep := range gp.Replicas {
					if rep.Voter != voter {
						continue
					}
					if m, ok := s.mem.member(rep.Node); ok && m.alive() && m.Name != s.cfg.Name {
						http.Redirect(w, r, "http://"+m.HTTP+r.URL.RequestURI(), http.StatusTemporaryRedirect)
						return
					}
				}
			}
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "no replica of "+gid+" is reachable")
			return
		}
	}
	writeError(w, http.StatusNotFound, "no group "+gid)
}
