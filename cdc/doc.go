// Package cdc will serve change feeds: a group's committed changes streamed
// from an index, and the CZone followers that apply the global group's feed
// to a local read-only copy. It is part of the layout of DESIGN.md and is
// built by the change-feed issue; nothing in it yet.
package cdc
