// Package cdc serves change feeds: the ordered stream of a group's
// committed changes from an index, as NDJSON, with heartbeats on a quiet
// feed, 410 Gone for an index no longer kept, and a consistent snapshot to
// start from.
//
// The changes come from the group's state machine (package store), which
// records them in the same transaction as the data, so a feed never shows
// a change that is not applied nor misses one that is. Records carry the
// Raft index: indexes strictly increase, and resuming from the last index
// seen plus one delivers each change exactly once.
//
// CZone followers (the asynchronous read copies of the global group) are
// built on the same feed; see the change-feed issue.
package cdc
