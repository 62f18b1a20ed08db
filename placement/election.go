package placement

// FailoverOrder returns, best first, the zones that should serve group g
// when its serving zone is lost: the range's failover list, then (for a
// range without one) none; the planner falls back to wherever Raft elected
// the new leader.
//
// Why not give replicas in preferred zones shorter election timeouts, so the
// first new leader lands there? hashicorp/raft followers reject votes while
// they still know a leader, and forget it only when their own timeout fires:
// longer timeouts on the other replicas hold back the preferred candidate
// until they expire, and the slowest often wins anyway. So every replica
// detects the loss equally fast, and leadership is handed to the preferred
// zone right after the election (a leadership transfer skips that check).
func FailoverOrder(topo *Topology, g *GroupPlacement) []string {
	if r, ok := topo.Range(g.ID); ok {
		return r.Failover
	}
	return nil
}
